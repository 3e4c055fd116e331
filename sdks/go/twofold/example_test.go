package twofold_test

import (
	"context"
	"log"
	"time"

	twofoldv1 "github.com/twofold-auth/twofold/sdks/go/gen/twofold/v1"
	"github.com/twofold-auth/twofold/sdks/go/twofold"
)

// A backend confirms a payout with a code sent by SMS to the user's registered phone.
func Example_codeService() {
	conn, err := twofold.Dial("127.0.0.1:4434", twofold.WithInsecure(), twofold.WithAdminKey("my-local-admin-key-123"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	codes := twofoldv1.NewCodeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	sent, err := codes.SendCode(ctx, &twofoldv1.SendCodeRequest{
		IdentityId: "<identity-id>",
		Target:     &twofoldv1.SendCodeRequest_Via{Via: "phone"},
		Purpose:    "confirm-payout",
		RequestId:  "payout-42", // a retry with the same id sends nothing new
	})
	if delay, ok := twofold.RetryDelay(err); ok {
		log.Printf("too many codes (%s); try again in %s", twofold.ReasonName(err), delay)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("code sent to %s", sent.GetMaskedAddress())

	codeFromUser := "492817"
	result, err := codes.VerifyCode(ctx, &twofoldv1.VerifyCodeRequest{
		ChallengeId: sent.GetChallengeId(), Code: codeFromUser, Purpose: "confirm-payout",
	})
	if err != nil {
		log.Fatal(err)
	}
	// A wrong code is an answer, not an error.
	if !result.GetVerified() {
		log.Printf("not confirmed: %v", result.GetFailureReason())
		return
	}
	log.Printf("payout confirmed by identity %s", result.GetIdentityId())
}

// A user's AAL1 session is stepped up to AAL2 with a code by SMS; the token rotates.
func Example_stepUp() {
	tokens := twofold.NewTokenStore("<AAL1 session token>")
	conn, err := twofold.Dial("auth.example.com:443", twofold.WithSessionToken(tokens.Get))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	flows := twofoldv1.NewFlowServiceClient(conn)
	ctx := context.Background()

	flow, err := flows.CreateLoginFlow(ctx, &twofoldv1.CreateLoginFlowRequest{
		RequestedAal: twofoldv1.AuthenticatorAssuranceLevel_AUTHENTICATOR_ASSURANCE_LEVEL_AAL2,
		Via:          "phone",
	})
	if err != nil {
		log.Fatal(err)
	}
	passed, err := flows.SubmitLoginCode(ctx, &twofoldv1.SubmitLoginCodeRequest{
		FlowId: flow.GetFlow().GetId(), Code: "492817",
	})
	if twofold.Reason(err) == twofoldv1.ErrorReason_ERROR_REASON_CODE_INVALID {
		log.Print("wrong code; ask again")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	// The previous token answers SESSION_INACTIVE from now on.
	tokens.Set(passed.GetSessionToken())
}

// A backend checks the session token its user sent, on one shared connection.
func ExampleContextWithSessionToken() {
	conn, err := twofold.Dial("auth.example.com:443")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	sessions := twofoldv1.NewSessionServiceClient(conn)

	userToken := "<token from the request>"
	ctx := twofold.ContextWithSessionToken(context.Background(), userToken)
	whoami, err := sessions.WhoAmI(ctx, &twofoldv1.WhoAmIRequest{})
	switch twofold.Reason(err) {
	case twofoldv1.ErrorReason_ERROR_REASON_UNSPECIFIED:
		if err != nil {
			log.Fatal(err)
		}
		log.Printf("identity %s at %v", whoami.GetSession().GetIdentity().GetId(), whoami.GetSession().GetAal())
	case twofoldv1.ErrorReason_ERROR_REASON_SESSION_AAL2_REQUIRED:
		log.Print("ask the user for a second factor")
	case twofoldv1.ErrorReason_ERROR_REASON_SESSION_INACTIVE:
		log.Print("ask the user to sign in")
	default:
		log.Print(err)
	}
}
