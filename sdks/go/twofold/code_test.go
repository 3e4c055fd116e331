package twofold_test

import (
	"strings"
	"testing"

	twofoldv1 "github.com/twofold-auth/twofold/sdks/go/gen/twofold/v1"
	"github.com/twofold-auth/twofold/sdks/go/internal/testserver"
	"github.com/twofold-auth/twofold/sdks/go/twofold"
)

// A backend confirms a sensitive action with a code by SMS through CodeService.
func TestCodeServiceSendAndVerify(t *testing.T) {
	t.Parallel()
	server := testserver.Start(t)
	ctx := callContext(t)
	admin := adminConn(t, server)

	created, err := twofoldv1.NewIdentityServiceClient(admin).CreateIdentity(ctx, &twofoldv1.CreateIdentityRequest{
		Traits: traits(t, "payee@example.com", phone),
	})
	if err != nil {
		t.Fatalf("CreateIdentity: %v", err)
	}
	codes := twofoldv1.NewCodeServiceClient(admin)
	sent, err := codes.SendCode(ctx, &twofoldv1.SendCodeRequest{
		IdentityId: created.GetIdentity().GetId(),
		Target:     &twofoldv1.SendCodeRequest_Via{Via: "phone"},
		Purpose:    "confirm-payout",
		RequestId:  "payout-42",
	})
	if err != nil {
		t.Fatalf("SendCode: %v", err)
	}
	if sent.GetChannel() != twofoldv1.Channel_CHANNEL_SMS {
		t.Fatalf("SendCode used %v; want SMS", sent.GetChannel())
	}
	sms := server.SMS.Next(t, phoneE164)
	if !strings.Contains(sms.Text, sms.Code) {
		t.Fatalf("the SMS text %q does not carry its code %q", sms.Text, sms.Code)
	}

	wrong := "000000"
	if sms.Code == wrong {
		wrong = "111111"
	}
	// A wrong code is an answer, not a failed call: backends branch on failure_reason.
	refused, err := codes.VerifyCode(ctx, &twofoldv1.VerifyCodeRequest{
		ChallengeId: sent.GetChallengeId(), Code: wrong, Purpose: "confirm-payout",
	})
	if err != nil {
		t.Fatalf("VerifyCode with a wrong code failed (reason %v); want an answer: %v", twofold.Reason(err), err)
	}
	if refused.GetVerified() || refused.GetFailureReason() != twofoldv1.ErrorReason_ERROR_REASON_CODE_INVALID {
		t.Fatalf("wrong code: verified %v, reason %v; want false, CODE_INVALID", refused.GetVerified(), refused.GetFailureReason())
	}

	verified, err := codes.VerifyCode(ctx, &twofoldv1.VerifyCodeRequest{
		ChallengeId: sent.GetChallengeId(), Code: sms.Code, Purpose: "confirm-payout",
	})
	if err != nil {
		t.Fatalf("VerifyCode with the right code: %v", err)
	}
	if !verified.GetVerified() || verified.GetIdentityId() != created.GetIdentity().GetId() {
		t.Fatalf("right code: verified %v for identity %q; want true for %q",
			verified.GetVerified(), verified.GetIdentityId(), created.GetIdentity().GetId())
	}
}

func TestCodeServiceNeedsTheAdminKey(t *testing.T) {
	t.Parallel()
	server := testserver.Start(t)
	codes := twofoldv1.NewCodeServiceClient(dial(t, server.Admin))

	_, err := codes.SendCode(callContext(t), &twofoldv1.SendCodeRequest{
		IdentityId: "00000000-0000-0000-0000-000000000000",
		Target:     &twofoldv1.SendCodeRequest_Via{Via: "phone"},
		Purpose:    "confirm-payout",
	})
	wantReason(t, err, twofoldv1.ErrorReason_ERROR_REASON_ADMIN_KEY_REQUIRED)
	if name := twofold.ReasonName(err); name != "ADMIN_KEY_REQUIRED" {
		t.Fatalf("ReasonName %q; want ADMIN_KEY_REQUIRED", name)
	}
}
