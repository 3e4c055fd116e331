package twofold_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	twofoldv1 "github.com/twofold-auth/twofold/sdks/go/gen/twofold/v1"
	"github.com/twofold-auth/twofold/sdks/go/internal/testserver"
	"github.com/twofold-auth/twofold/sdks/go/twofold"
)

func TestDialRefusesATokenAndAnAdminKeyTogether(t *testing.T) {
	t.Parallel()
	conn, err := twofold.Dial("127.0.0.1:1", twofold.WithInsecure(),
		twofold.WithSessionToken(func() string { return "token" }), twofold.WithAdminKey("key"))
	if err == nil {
		_ = conn.Close()
		t.Fatal("Dial accepted both a session token and an admin key")
	}
}

// Without WithInsecure the connection speaks TLS, which the plaintext test server cannot answer:
// credentials never go out in the clear by default.
func TestDialUsesTLSUnlessInsecureIsChosen(t *testing.T) {
	t.Parallel()
	server := testserver.Start(t)
	conn, err := twofold.Dial(server.Public, twofold.WithSessionToken(func() string { return "secret" }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_, err = twofoldv1.NewSessionServiceClient(conn).WhoAmI(callContext(t), &twofoldv1.WhoAmIRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("WhoAmI over TLS to a plaintext server: %v; want Unavailable", err)
	}
}
