package passwordless

import (
	"context"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// tokenCacheSize bounds the memory the cache of verified tokens may take
// (a token is a few hundred bytes).
const tokenCacheSize = 10000

// sessionRecheck is how long a session found active is trusted before the
// store is asked again. Logout on this instance takes effect at once; on
// another instance sharing the store, within this time.
const sessionRecheck = time.Second

// crossSiteError answers an unsafe request that carries the session
// cookie but comes from another site.
var crossSiteError = &apiError{status: http.StatusForbidden, detail: "Cross-site request refused."}

// authenticate returns the claims of the request's valid token, from the
// Authorization header or else the session cookie, or nil and why not.
func (p *Passwordless) authenticate(r *http.Request) (*Claims, string) {
	tok := bearerToken(r.Header.Get("Authorization"))
	if tok == "" {
		tok = cookieToken(r)
		if tok == "" {
			return nil, reasonMissing
		}
		// A browser attaches the cookie to requests other sites make it
		// send (SameSite=Lax still lets top-level POSTs of some kinds
		// through older browsers): unsafe methods must come from here.
		if !safeMethod(r.Method) && !sameOrigin(r) {
			return nil, reasonCrossSite
		}
	}
	return p.checkToken(r.Context(), tok)
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// checkToken verifies a token, by signature the first time and from the
// cache after that, and that its session is still active.
func (p *Passwordless) checkToken(ctx context.Context, tok string) (*Claims, string) {
	t := now()
	c := p.verified.token(tok, t)
	if c == nil {
		var err error
		if c, err = p.keys.verify(tok); err != nil {
			return nil, reasonInvalid
		}
		p.verified.putToken(tok, c)
	}
	active, known := p.verified.session(c.SessionID, t)
	if !known {
		var err error
		active, err = p.store.SessionActive(ctx, c.SessionID, t)
		if err != nil {
			p.logger.Error("checking session", zap.Error(err))
			return nil, reasonInvalid
		}
		p.verified.putSession(c.SessionID, active, t)
	}
	if !active {
		return nil, reasonRevoked
	}
	return c, ""
}

// tokenCache remembers verified tokens until they expire, so EdDSA and
// RSA signatures are checked once per token, not once per request, and
// the state of sessions for a moment. Both maps are bounded: when full, a
// random entry goes (Go's map order is random), as in caddyauth's cache.
type tokenCache struct {
	mu       sync.RWMutex
	max      int
	tokens   map[string]*Claims
	sessions map[string]sessionState
}

type sessionState struct {
	active  bool
	checked time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, tokens: make(map[string]*Claims), sessions: make(map[string]sessionState)}
}

func (tc *tokenCache) token(tok string, t time.Time) *Claims {
	tc.mu.RLock()
	c := tc.tokens[tok]
	tc.mu.RUnlock()
	// Expiry is checked here as the parser would, leeway aside: a cached
	// token never outlives its exp.
	if c == nil || c.ExpiresAt == nil || !t.Before(c.ExpiresAt.Time) {
		return nil
	}
	return c
}

func (tc *tokenCache) putToken(tok string, c *Claims) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if len(tc.tokens) >= tc.max {
		for k := range tc.tokens {
			delete(tc.tokens, k)
			break
		}
	}
	tc.tokens[tok] = c
}

// session answers a session's state if it was checked recently. A revoked
// session stays revoked: that answer never needs a recheck.
func (tc *tokenCache) session(sid string, t time.Time) (active, known bool) {
	tc.mu.RLock()
	s, ok := tc.sessions[sid]
	tc.mu.RUnlock()
	if !ok || (s.active && t.Sub(s.checked) >= sessionRecheck) {
		return false, false
	}
	return s.active, true
}

func (tc *tokenCache) putSession(sid string, active bool, t time.Time) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if _, ok := tc.sessions[sid]; !ok && len(tc.sessions) >= tc.max {
		for k := range tc.sessions {
			delete(tc.sessions, k)
			break
		}
	}
	tc.sessions[sid] = sessionState{active: active, checked: t}
}
