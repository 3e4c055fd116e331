package twofold

import (
	"context"
	"sync"
)

// TokenStore holds the current session token for a [Dial] connection. It is safe for concurrent
// use. Store the token from every response that returns one (SubmitRegistrationFlow,
// SubmitLoginPassword, SubmitLoginCode): a step-up to AAL2 replaces the token, and the previous
// one then answers SESSION_INACTIVE.
type TokenStore struct {
	mu    sync.Mutex
	token string
}

// NewTokenStore returns a store holding token (which may be empty).
func NewTokenStore(token string) *TokenStore {
	return &TokenStore{token: token}
}

// Get returns the current token; pass the method value to [WithSessionToken].
func (s *TokenStore) Get() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// Set replaces the current token; calls started afterwards send the new one.
func (s *TokenStore) Set(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
}

type tokenKey struct{}

// ContextWithSessionToken makes calls made with ctx send token instead of the connection's own
// session token. A backend that checks its users' sessions (SessionService.WhoAmI) shares one
// connection and passes each user's token this way.
func ContextWithSessionToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, tokenKey{}, token)
}

func tokenFromContext(ctx context.Context) (string, bool) {
	token, ok := ctx.Value(tokenKey{}).(string)
	return token, ok
}
