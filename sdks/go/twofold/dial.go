package twofold

import (
	"context"
	"crypto/tls"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Option configures [Dial].
type Option func(*settings)

type settings struct {
	token       func() string
	adminKey    string
	insecure    bool
	tlsConfig   *tls.Config
	dialOptions []grpc.DialOption
}

// WithSessionToken sends `authorization: Bearer <token>` on every call, asking token for the
// current value each time (use [TokenStore.Get] so a rotated token is picked up). An empty token
// sends no header. For the public listener.
func WithSessionToken(token func() string) Option {
	return func(s *settings) { s.token = token }
}

// WithAdminKey sends `authorization: Bearer <key>` on every call. For the admin listener.
func WithAdminKey(key string) Option {
	return func(s *settings) { s.adminKey = key }
}

// WithInsecure connects in plaintext (h2c), for a server on loopback or behind a
// TLS-terminating proxy on the same host. Credentials are then sent unencrypted.
func WithInsecure() Option {
	return func(s *settings) { s.insecure = true }
}

// WithTLSConfig replaces the default TLS configuration (system roots, TLS 1.2 or newer).
func WithTLSConfig(config *tls.Config) Option {
	return func(s *settings) { s.tlsConfig = config }
}

// WithDialOptions passes extra options to grpc.NewClient (interceptors, keepalive, ...).
func WithDialOptions(options ...grpc.DialOption) Option {
	return func(s *settings) { s.dialOptions = append(s.dialOptions, options...) }
}

// Dial creates a client connection to target ("host:port", or any grpc.NewClient target). Like
// grpc.NewClient it does not connect until the first call. Close the connection when done.
func Dial(target string, options ...Option) (*grpc.ClientConn, error) {
	var s settings
	for _, option := range options {
		option(&s)
	}
	if s.token != nil && s.adminKey != "" {
		return nil, errors.New("twofold: WithSessionToken and WithAdminKey are for different listeners; use one")
	}

	transport := insecure.NewCredentials()
	if !s.insecure {
		config := s.tlsConfig
		if config == nil {
			// A nil RootCAs means the system roots.
			config = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		transport = credentials.NewTLS(config)
	}
	dialOptions := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		// Always installed so ContextWithSessionToken works on any connection.
		grpc.WithPerRPCCredentials(bearer{token: s.token, adminKey: s.adminKey, secure: !s.insecure}),
	}
	return grpc.NewClient(target, append(dialOptions, s.dialOptions...)...)
}

// bearer puts the token or key into the `authorization` metadata of each call.
type bearer struct {
	token    func() string
	adminKey string
	secure   bool
}

func (b bearer) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	value, ok := tokenFromContext(ctx)
	switch {
	case ok:
	case b.adminKey != "":
		value = b.adminKey
	case b.token != nil:
		value = b.token()
	}
	if value == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + value}, nil
}

// RequireTransportSecurity is false only when the caller chose WithInsecure; grpc-go would
// otherwise refuse to send credentials over the plaintext connection.
func (b bearer) RequireTransportSecurity() bool {
	return b.secure
}
