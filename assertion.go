package passwordless

import (
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The assertion tells a backend who the user is in a form it can verify
// with {prefix}/jwks.json, instead of trusting whoever can reach it to
// have been through the proxy. Its `aud` is the host the client asked
// for, so an assertion one backend received is worth nothing at another.
// It has no `sid`, so it is never a credential here.

const (
	// assertionTTL bounds how long a leaked assertion is worth anything.
	assertionTTL = 60 * time.Second
	// assertionReuse is how long one assertion serves a session and host,
	// so that signing is not per-request work; it has at least
	// assertionTTL-assertionReuse to live when handed out.
	assertionReuse = 30 * time.Second
)

type assertionClaims struct {
	Email  string   `json:"email,omitempty"`
	Mobile string   `json:"mobile,omitempty"`
	Roles  []string `json:"roles,omitempty"`
	jwt.RegisteredClaims
}

// assertion is the X-Auth-Assertion for a request to host by the user of
// st, or without user claims for a path that needs no sign-in (st nil).
func (p *Passwordless) assertion(host string, st *userState) (string, *apiError) {
	key := assertionKey{host: bareHost(host)}
	if st != nil {
		key.session = st.su.Session.ID
	}
	t := now()
	if a := p.assertions.get(key, st, t); a != "" {
		return a, nil
	}
	c := &assertionClaims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: p.JWT.Issuer, Audience: jwt.ClaimStrings{key.host},
		IssuedAt: jwt.NewNumericDate(t), ExpiresAt: jwt.NewNumericDate(t.Add(assertionTTL)),
	}}
	if st != nil {
		c.Subject, c.Email, c.Mobile, c.Roles = st.userID, st.email, st.mobile, st.roles
	}
	a, err := p.keys.sign(c)
	if err != nil {
		return "", p.internal("signing assertion", err)
	}
	p.assertions.put(key, &cachedAssertion{token: a, issued: t, st: st})
	return a, nil
}

type assertionKey struct{ session, host string }

type cachedAssertion struct {
	token  string
	issued time.Time
	st     *userState // whose claims it carries
}

// assertionCache keeps signed assertions for assertionReuse. Bounded
// like tokenCache: when full, a random entry goes.
type assertionCache struct {
	mu  sync.RWMutex
	max int
	m   map[assertionKey]*cachedAssertion
}

func newAssertionCache(max int) *assertionCache {
	return &assertionCache{max: max, m: make(map[assertionKey]*cachedAssertion)}
}

// get answers a cached assertion that is young enough and says what st
// says now: a change of roles or aliases is signed anew at once.
func (ac *assertionCache) get(key assertionKey, st *userState, t time.Time) string {
	ac.mu.RLock()
	c := ac.m[key]
	ac.mu.RUnlock()
	if c == nil || t.Sub(c.issued) >= assertionReuse || t.Before(c.issued) || !sameClaims(c.st, st) {
		return ""
	}
	return c.token
}

func (ac *assertionCache) put(key assertionKey, c *cachedAssertion) {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	putBounded(ac.m, ac.max, key, c)
}

// sameClaims reports whether two states of a session give the same
// assertion claims. States are replaced every sessionRecheck, mostly
// with the same content.
func sameClaims(a, b *userState) bool {
	if a == b {
		return true
	}
	return a != nil && b != nil && a.userID == b.userID && a.email == b.email && a.mobile == b.mobile && a.rolesHeader == b.rolesHeader
}
