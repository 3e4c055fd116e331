package twofold_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	twofoldv1 "github.com/twofold-auth/twofold/sdks/go/gen/twofold/v1"
	"github.com/twofold-auth/twofold/sdks/go/internal/testserver"
	"github.com/twofold-auth/twofold/sdks/go/twofold"
)

const (
	phone     = "+49 151 12345678"
	phoneE164 = "+4915112345678"
	password  = "correct horse battery staple"
)

func callContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, target string, options ...twofold.Option) *grpc.ClientConn {
	t.Helper()
	conn, err := twofold.Dial(target, append([]twofold.Option{twofold.WithInsecure()}, options...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func adminConn(t *testing.T, server *testserver.Server) *grpc.ClientConn {
	return dial(t, server.Admin, twofold.WithAdminKey(testserver.AdminKey))
}

func traits(t *testing.T, email, phone string) *structpb.Struct {
	t.Helper()
	value, err := structpb.NewStruct(map[string]any{"email": email, "phone": phone})
	if err != nil {
		t.Fatal(err)
	}
	return value
}

// register runs a registration flow and returns its answer (identity, AAL1 session, token).
func register(t *testing.T, flows twofoldv1.FlowServiceClient, email string) *twofoldv1.SubmitRegistrationFlowResponse {
	t.Helper()
	ctx := callContext(t)
	created, err := flows.CreateRegistrationFlow(ctx, &twofoldv1.CreateRegistrationFlowRequest{})
	if err != nil {
		t.Fatalf("CreateRegistrationFlow: %v", err)
	}
	submitted, err := flows.SubmitRegistrationFlow(ctx, &twofoldv1.SubmitRegistrationFlowRequest{
		FlowId:   created.GetFlow().GetId(),
		Traits:   traits(t, email, phone),
		Password: password,
	})
	if err != nil {
		t.Fatalf("SubmitRegistrationFlow: %v", err)
	}
	return submitted
}

// wantReason fails the test unless err is a Twofold error with the given reason.
func wantReason(t *testing.T, err error, want twofoldv1.ErrorReason) {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded; want reason %v", want)
	}
	if got := twofold.Reason(err); got != want {
		t.Fatalf("reason %v (name %q); want %v; error: %v", got, twofold.ReasonName(err), want, err)
	}
}
