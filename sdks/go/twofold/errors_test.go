package twofold_test

import (
	"fmt"
	"testing"
	"time"

	twofoldv1 "github.com/twofold-auth/twofold/sdks/go/gen/twofold/v1"
	"github.com/twofold-auth/twofold/sdks/go/internal/testserver"
	"github.com/twofold-auth/twofold/sdks/go/twofold"
)

func TestResendInsideCooldownSaysHowLongToWait(t *testing.T) {
	t.Parallel()
	server := testserver.Start(t)
	ctx := callContext(t)
	tokens := twofold.NewTokenStore("")
	conn := dial(t, server.Public, twofold.WithSessionToken(tokens.Get))
	flows := twofoldv1.NewFlowServiceClient(conn)
	tokens.Set(register(t, flows, "cooldown@example.com").GetSessionToken())

	stepUp, err := flows.CreateLoginFlow(ctx, &twofoldv1.CreateLoginFlowRequest{
		RequestedAal: twofoldv1.AuthenticatorAssuranceLevel_AUTHENTICATOR_ASSURANCE_LEVEL_AAL2,
		Via:          "phone",
	})
	if err != nil {
		t.Fatalf("CreateLoginFlow(AAL2): %v", err)
	}
	_, err = flows.ResendLoginCode(ctx, &twofoldv1.ResendLoginCodeRequest{FlowId: stepUp.GetFlow().GetId()})
	wantReason(t, err, twofoldv1.ErrorReason_ERROR_REASON_CODE_RESEND_COOLDOWN)

	delay, ok := twofold.RetryDelay(err)
	if !ok || delay <= 0 || delay > time.Minute {
		t.Fatalf("RetryDelay = %v, %v; want a positive delay within the 30s cooldown", delay, ok)
	}
	// Callers often wrap errors on the way up; the helpers still find the details.
	wrapped := fmt.Errorf("resending: %w", err)
	if twofold.Reason(wrapped) != twofoldv1.ErrorReason_ERROR_REASON_CODE_RESEND_COOLDOWN {
		t.Fatalf("Reason of a wrapped error: %v", twofold.Reason(wrapped))
	}
	if again, ok := twofold.RetryDelay(wrapped); !ok || again != delay {
		t.Fatalf("RetryDelay of a wrapped error = %v, %v; want %v", again, ok, delay)
	}
}

func TestInvalidEmailNamesTheField(t *testing.T) {
	t.Parallel()
	server := testserver.Start(t)
	ctx := callContext(t)
	flows := twofoldv1.NewFlowServiceClient(dial(t, server.Public))

	created, err := flows.CreateRegistrationFlow(ctx, &twofoldv1.CreateRegistrationFlowRequest{})
	if err != nil {
		t.Fatalf("CreateRegistrationFlow: %v", err)
	}
	_, err = flows.SubmitRegistrationFlow(ctx, &twofoldv1.SubmitRegistrationFlowRequest{
		FlowId:   created.GetFlow().GetId(),
		Traits:   traits(t, "not-an-email", phone),
		Password: password,
	})
	wantReason(t, err, twofoldv1.ErrorReason_ERROR_REASON_TRAITS_INVALID)

	var fields []string
	for _, violation := range twofold.FieldViolations(err) {
		fields = append(fields, violation.GetField())
	}
	if len(fields) != 1 || fields[0] != "traits.email" {
		t.Fatalf("field violations name %q; want exactly traits.email", fields)
	}
	if _, ok := twofold.RetryDelay(err); ok {
		t.Fatal("a validation error carries no RetryInfo")
	}
}
