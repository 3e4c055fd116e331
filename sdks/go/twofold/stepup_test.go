package twofold_test

import (
	"testing"

	twofoldv1 "github.com/twofold-auth/twofold/sdks/go/gen/twofold/v1"
	"github.com/twofold-auth/twofold/sdks/go/internal/testserver"
	"github.com/twofold-auth/twofold/sdks/go/twofold"
)

// The seed's scenario: a password session (AAL1) is stepped up to AAL2 with a code by SMS.
func TestStepUpToAAL2WithSMSCode(t *testing.T) {
	t.Parallel()
	server := testserver.Start(t)
	ctx := callContext(t)
	tokens := twofold.NewTokenStore("")
	conn := dial(t, server.Public, twofold.WithSessionToken(tokens.Get))
	flows := twofoldv1.NewFlowServiceClient(conn)
	sessions := twofoldv1.NewSessionServiceClient(conn)

	register(t, flows, "jane@example.com")

	login, err := flows.CreateLoginFlow(ctx, &twofoldv1.CreateLoginFlowRequest{
		RequestedAal: twofoldv1.AuthenticatorAssuranceLevel_AUTHENTICATOR_ASSURANCE_LEVEL_AAL1,
	})
	if err != nil {
		t.Fatalf("CreateLoginFlow(AAL1): %v", err)
	}
	loggedIn, err := flows.SubmitLoginPassword(ctx, &twofoldv1.SubmitLoginPasswordRequest{
		FlowId: login.GetFlow().GetId(), Identifier: "jane@example.com", Password: password,
	})
	if err != nil {
		t.Fatalf("SubmitLoginPassword: %v", err)
	}
	if aal := loggedIn.GetSession().GetAal(); aal != twofoldv1.AuthenticatorAssuranceLevel_AUTHENTICATOR_ASSURANCE_LEVEL_AAL1 {
		t.Fatalf("password login gave %v; want AAL1", aal)
	}
	aal1Token := loggedIn.GetSessionToken()
	tokens.Set(aal1Token)

	// With a phone on file and code MFA on, the highest available level is AAL2.
	_, err = sessions.WhoAmI(ctx, &twofoldv1.WhoAmIRequest{})
	wantReason(t, err, twofoldv1.ErrorReason_ERROR_REASON_SESSION_AAL2_REQUIRED)

	stepUp, err := flows.CreateLoginFlow(ctx, &twofoldv1.CreateLoginFlowRequest{
		RequestedAal: twofoldv1.AuthenticatorAssuranceLevel_AUTHENTICATOR_ASSURANCE_LEVEL_AAL2,
		Via:          "phone",
	})
	if err != nil {
		t.Fatalf("CreateLoginFlow(AAL2, via phone): %v", err)
	}
	if state := stepUp.GetFlow().GetState(); state != twofoldv1.FlowState_FLOW_STATE_CODE_SENT {
		t.Fatalf("AAL2 flow via phone is %v; want CODE_SENT", state)
	}
	if channel := stepUp.GetFlow().GetCodeSentTo().GetChannel(); channel != twofoldv1.Channel_CHANNEL_SMS {
		t.Fatalf("code went by %v; want SMS", channel)
	}

	sms := server.SMS.Next(t, phoneE164)
	passed, err := flows.SubmitLoginCode(ctx, &twofoldv1.SubmitLoginCodeRequest{
		FlowId: stepUp.GetFlow().GetId(), Code: sms.Code,
	})
	if err != nil {
		t.Fatalf("SubmitLoginCode: %v", err)
	}
	if passed.GetSessionToken() == "" || passed.GetSessionToken() == aal1Token {
		t.Fatal("the step-up did not issue a new session token")
	}
	tokens.Set(passed.GetSessionToken())

	whoami, err := sessions.WhoAmI(ctx, &twofoldv1.WhoAmIRequest{})
	if err != nil {
		t.Fatalf("WhoAmI with the new token: %v", err)
	}
	session := whoami.GetSession()
	if session.GetAal() != twofoldv1.AuthenticatorAssuranceLevel_AUTHENTICATOR_ASSURANCE_LEVEL_AAL2 {
		t.Fatalf("session is %v after the step-up; want AAL2", session.GetAal())
	}
	var methods []twofoldv1.AuthenticationMethodType
	for _, method := range session.GetAuthenticationMethods() {
		methods = append(methods, method.GetMethod())
	}
	if len(methods) != 2 ||
		methods[0] != twofoldv1.AuthenticationMethodType_AUTHENTICATION_METHOD_TYPE_PASSWORD ||
		methods[1] != twofoldv1.AuthenticationMethodType_AUTHENTICATION_METHOD_TYPE_CODE {
		t.Fatalf("authentication methods %v; want [password code]", methods)
	}

	// The old token, sent on the same connection through the context, no longer works.
	_, err = sessions.WhoAmI(twofold.ContextWithSessionToken(ctx, aal1Token), &twofoldv1.WhoAmIRequest{
		RequiredAal: twofoldv1.RequiredAal_REQUIRED_AAL_AAL1,
	})
	wantReason(t, err, twofoldv1.ErrorReason_ERROR_REASON_SESSION_INACTIVE)
}
