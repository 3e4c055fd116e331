package twofold

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	twofoldv1 "github.com/twofold-auth/twofold/sdks/go/gen/twofold/v1"
)

// Domain is the google.rpc.ErrorInfo domain of Twofold's errors.
const Domain = "twofold"

const reasonPrefix = "ERROR_REASON_"

// Reason returns the stable cause of a failed Twofold call, from the google.rpc.ErrorInfo the
// server attaches. It is ERROR_REASON_UNSPECIFIED for nil, for errors that are not gRPC statuses
// or carry no Twofold ErrorInfo, and for reasons newer than this SDK (see [ReasonName]).
func Reason(err error) twofoldv1.ErrorReason {
	name := ReasonName(err)
	if name == "" {
		return twofoldv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	return twofoldv1.ErrorReason(twofoldv1.ErrorReason_value[reasonPrefix+name])
}

// ReasonName returns the ErrorInfo reason exactly as the server sent it (for example
// "CODE_INVALID"), or "" when there is none. Unlike [Reason] it also shows reasons added to the
// server after this SDK was built.
func ReasonName(err error) string {
	for _, detail := range details(err) {
		if info, ok := detail.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason()
		}
	}
	return ""
}

// RetryDelay returns how long to wait before trying again, from google.rpc.RetryInfo. Twofold
// sends it with CODE_RESEND_COOLDOWN and RATE_LIMITED; ok is false when err carries none.
func RetryDelay(err error) (delay time.Duration, ok bool) {
	for _, detail := range details(err) {
		if info, isRetry := detail.(*errdetails.RetryInfo); isRetry && info.GetRetryDelay() != nil {
			return info.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// FieldViolations returns the fields a validation error names (google.rpc.BadRequest), for
// example "traits.email" with VALIDATION_FAILED or TRAITS_INVALID; nil when there are none.
func FieldViolations(err error) []*errdetails.BadRequest_FieldViolation {
	var violations []*errdetails.BadRequest_FieldViolation
	for _, detail := range details(err) {
		if request, ok := detail.(*errdetails.BadRequest); ok {
			violations = append(violations, request.GetFieldViolations()...)
		}
	}
	return violations
}

// details unpacks the status details of err, also when err wraps a gRPC status error.
func details(err error) []any {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	return st.Details()
}
