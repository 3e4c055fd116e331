package twofold_test

import (
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	twofoldv1 "github.com/twofold-auth/twofold/sdks/go/gen/twofold/v1"
	"github.com/twofold-auth/twofold/sdks/go/twofold"
)

// Statuses built here stand for what no test server sends: a reason newer than this SDK, and
// an ErrorInfo from another domain (a proxy or another service on the call path).
func TestReasonMapping(t *testing.T) {
	t.Parallel()
	withInfo := func(domain, reason string) error {
		st, err := status.New(codes.FailedPrecondition, "test").WithDetails(&errdetails.ErrorInfo{Domain: domain, Reason: reason})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	cases := []struct {
		err      error
		reason   twofoldv1.ErrorReason
		wantName string
	}{
		{withInfo("twofold", "CODE_INVALID"), twofoldv1.ErrorReason_ERROR_REASON_CODE_INVALID, "CODE_INVALID"},
		{withInfo("twofold", "A_REASON_FROM_THE_FUTURE"), twofoldv1.ErrorReason_ERROR_REASON_UNSPECIFIED, "A_REASON_FROM_THE_FUTURE"},
		{withInfo("googleapis.com", "CODE_INVALID"), twofoldv1.ErrorReason_ERROR_REASON_UNSPECIFIED, ""},
		{status.Error(codes.Unavailable, "no details"), twofoldv1.ErrorReason_ERROR_REASON_UNSPECIFIED, ""},
	}
	for _, c := range cases {
		if got := twofold.Reason(c.err); got != c.reason {
			t.Errorf("Reason(%v) = %v; want %v", c.err, got, c.reason)
		}
		if got := twofold.ReasonName(c.err); got != c.wantName {
			t.Errorf("ReasonName(%v) = %q; want %q", c.err, got, c.wantName)
		}
	}
}

func TestHelpersOnErrorsWithoutDetails(t *testing.T) {
	t.Parallel()
	plain := errors.New("not from gRPC")
	for _, err := range []error{nil, plain} {
		if got := twofold.Reason(err); got != twofoldv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			t.Errorf("Reason(%v) = %v; want UNSPECIFIED", err, got)
		}
		if got := twofold.ReasonName(err); got != "" {
			t.Errorf("ReasonName(%v) = %q; want empty", err, got)
		}
		if _, ok := twofold.RetryDelay(err); ok {
			t.Errorf("RetryDelay(%v) reported a delay", err)
		}
		if got := twofold.FieldViolations(err); got != nil {
			t.Errorf("FieldViolations(%v) = %v; want nil", err, got)
		}
	}
}
