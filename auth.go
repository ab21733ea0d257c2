package passwordless

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// tokenCacheSize bounds the memory the cache of verified tokens may take
// (a token is a few hundred bytes).
const tokenCacheSize = 10000

// sessionRecheck is how long the state of a session and its user (active,
// enabled, allowed, roles, aliases) is trusted before the store is asked
// again. Logout on this instance takes effect at once; on another instance
// sharing the store, and any change to the user, within this time.
const sessionRecheck = time.Second

// crossSiteError answers an unsafe request that carries the session
// cookie but comes from another site.
var crossSiteError = &apiError{status: http.StatusForbidden, detail: "Cross-site request refused."}

// authenticate returns the claims of the request's valid token, from the
// Authorization header or else the session cookie, with the current state
// of its user, or nil and why not.
func (p *Passwordless) authenticate(r *http.Request) (*Claims, *userState, string) {
	return p.authenticateFrom(r, sameOrigin)
}

// authenticateFrom is authenticate where an unsafe request by cookie must
// come from a page that fromPage accepts.
func (p *Passwordless) authenticateFrom(r *http.Request, fromPage func(*http.Request) bool) (*Claims, *userState, string) {
	tok := bearerToken(r.Header.Get("Authorization"))
	if tok == "" {
		tok = p.cookieToken(r)
		if tok == "" {
			return nil, nil, reasonMissing
		}
		// A browser attaches the cookie to requests other sites make it
		// send (SameSite=Lax still lets top-level POSTs of some kinds
		// through older browsers): unsafe methods must come from here.
		if !safeMethod(r.Method) && !fromPage(r) {
			return nil, nil, reasonCrossSite
		}
	}
	return p.checkToken(r.Context(), tok)
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// checkToken verifies a token, by signature the first time and from the
// cache after that, and returns the current state of its session's user.
// Per request this is two map lookups; the store is asked once per
// session per sessionRecheck.
func (p *Passwordless) checkToken(ctx context.Context, tok string) (*Claims, *userState, string) {
	t := now()
	c := p.verified.token(tok, t)
	if c == nil {
		var err error
		if c, err = p.keys.verify(tok); err != nil {
			return nil, nil, reasonInvalid
		}
		p.verified.putToken(tok, c)
	}
	st := p.verified.session(c.SessionID)
	gen := p.access.gen.Load()
	switch {
	case st == nil || (!st.final && t.Sub(st.checked) >= sessionRecheck):
		su, err := p.store.SessionUser(ctx, c.SessionID, t)
		switch {
		case errors.Is(err, ErrNotFound):
			st = &userState{final: true, checked: t}
		case err != nil:
			p.logger.Error("checking session", zap.Error(err))
			return nil, nil, reasonInvalid
		default:
			st = p.evaluate(su, t, gen)
			p.endRefused(ctx, c.SessionID, st)
		}
		p.verified.putSession(c.SessionID, st)
	case !st.final && st.gen != gen:
		// The allow file changed: roles and who is allowed are computed
		// again from what the store said, without asking it.
		st = p.evaluate(st.su, st.checked, gen)
		p.endRefused(ctx, c.SessionID, st)
		p.verified.putSession(c.SessionID, st)
	}
	if !st.valid {
		return nil, nil, reasonRevoked
	}
	// A token speaks for its session's user only: a sid naming another
	// user's session is no credential.
	if st.userID != c.Subject {
		return nil, nil, reasonInvalid
	}
	return c, st, ""
}

// tokenCache remembers verified tokens until they expire, so EdDSA and
// RSA signatures are checked once per token, not once per request, and
// the state of sessions for a moment. Both maps are bounded: when full, a
// random entry goes (Go's map order is random), as in caddyauth's cache.
type tokenCache struct {
	mu       sync.RWMutex
	max      int
	tokens   map[string]*Claims
	sessions map[string]*userState // by session id; entries are replaced, never changed
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, tokens: make(map[string]*Claims), sessions: make(map[string]*userState)}
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
	putBounded(tc.tokens, tc.max, tok, c)
}

// session answers the cached state of a session, nil if there is none.
func (tc *tokenCache) session(sid string) *userState {
	tc.mu.RLock()
	st := tc.sessions[sid]
	tc.mu.RUnlock()
	return st
}

func (tc *tokenCache) putSession(sid string, st *userState) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	putBounded(tc.sessions, tc.max, sid, st)
}

// putBounded sets m[k] to v. When m is full and k is new, a random entry
// goes first (Go's map order is random), as in caddyauth's cache: memory
// stays bounded whatever tokens clients send.
func putBounded[K comparable, V any](m map[K]V, max int, k K, v V) {
	if _, ok := m[k]; !ok && len(m) >= max {
		for old := range m {
			delete(m, old)
			break
		}
	}
	m[k] = v
}

// endSession marks a session ended here at once.
func (tc *tokenCache) endSession(sid string, t time.Time) {
	tc.putSession(sid, &userState{final: true, checked: t})
}

// endUser marks every cached session of a user ended.
func (tc *tokenCache) endUser(userID string, t time.Time) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for sid, st := range tc.sessions {
		if st.userID == userID {
			tc.sessions[sid] = &userState{final: true, checked: t}
		}
	}
}

// bearerToken takes the token from "Authorization: Bearer x" or the DRF
// form "Authorization: Token x".
func bearerToken(h string) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !(strings.EqualFold(scheme, "Bearer") || strings.EqualFold(scheme, "Token")) {
		return ""
	}
	return strings.TrimSpace(tok)
}

// sameOrigin reports whether a browser request comes from a page of this
// site: by Origin, or by Sec-Fetch-Site where a browser sends no Origin.
func sameOrigin(r *http.Request) bool {
	// "null" is what browsers send from privacy-sensitive contexts; the
	// fetch metadata then decides.
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		// The scheme counts too: on HTTPS, a page served over plain HTTP
		// to the same host is a network attacker's, the one __Host-
		// cookies keep out.
		return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) && u.Scheme == requestScheme(r)
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

// requestScheme is the scheme the client used to reach Caddy.
func requestScheme(r *http.Request) string {
	if isHTTPS(r) {
		return "https"
	}
	return "http"
}

// bearer authenticates an endpoint request by its bearer token.
func (p *Passwordless) bearer(r *http.Request) (*Claims, *apiError) {
	c, _, reason := p.authenticate(r)
	if c == nil {
		return nil, authFailure(reason)
	}
	return c, nil
}

// userState is what a protected request needs to know about the user of
// a session, current to sessionRecheck: computed when the session is
// loaded from the store or the allow file changes, then only looked up.
type userState struct {
	valid bool
	// final is true when the session can never become valid again
	// (revoked, expired, deleted, another realm's): no recheck needed.
	final       bool
	userID      string
	email       string
	mobile      string
	roles       []string
	rolesHeader string // "a,b"
	checked     time.Time
	gen         uint64
	su          SessionUser
}

// evaluate computes the state of a session as loaded from the store.
func (p *Passwordless) evaluate(su SessionUser, checked time.Time, gen uint64) *userState {
	u := su.User
	st := &userState{userID: u.ID, email: u.Email, mobile: u.Mobile, checked: checked, gen: gen, su: su}
	switch {
	case !su.Active || u.Realm != p.Realm:
		// A session of another realm is refused here even when both
		// realms verify the same key (a shared key_file or secret).
		st.final = true
	case u.Disabled || !p.access.admitsUser(u):
	default:
		st.valid = true
		st.roles = p.access.roles(u)
		st.rolesHeader = joinRoles(st.roles)
	}
	return st
}

// endRefused revokes, in the store, the session of a user found disabled
// or no longer admitted, as /refresh does: taken out is signed out, and
// putting the person back later must not revive the old sessions. The
// state becomes final, so this happens once per session.
func (p *Passwordless) endRefused(ctx context.Context, sid string, st *userState) {
	if st.valid || st.final {
		return
	}
	if err := p.store.RevokeSession(context.WithoutCancel(ctx), sid); err != nil {
		// Still refused now; the next check tries again.
		p.logger.Error("revoking the session of a refused user", zap.Error(err))
		return
	}
	st.final = true
}

const (
	reasonMissing   = "missing"
	reasonInvalid   = "invalid"
	reasonRevoked   = "revoked"
	reasonCrossSite = "cross-site"
)

// authFailure is the answer to a request whose credentials failed: 401
// with the challenge RFC 6750 asks for, or 403 for a cookie sent by
// another site.
func authFailure(reason string) *apiError {
	switch reason {
	case reasonCrossSite:
		return crossSiteError
	case reasonMissing:
		return &apiError{status: http.StatusUnauthorized, detail: "Authentication credentials were not provided.", challenge: `Bearer`}
	}
	return &apiError{status: http.StatusUnauthorized, detail: "The token is invalid or has expired.", challenge: `Bearer error="invalid_token"`}
}

// Session cookie names. On HTTPS the __Host- prefix makes browsers insist
// on Secure, Path=/ and no Domain, so no subdomain can plant or read it.
// A cookie for a whole domain cannot have that prefix: __Secure- still
// makes browsers insist on Secure, so no plain-HTTP page can plant it.
const (
	cookieName       = "pwl_session"
	secureCookieName = "__Host-pwl_session"
	domainCookieName = "__Secure-pwl_session"
)

// cookieToken returns the session cookie's token, if any. Over TLS only
// the prefixed cookies count: a sibling subdomain or a plain-HTTP attacker
// can plant the unprefixed one, and would sign the victim in as
// themselves. The domain-wide one counts only where cookie_domain says
// that every host of the domain is trusted with it.
func (p *Passwordless) cookieToken(r *http.Request) string {
	h := r.Header["Cookie"]
	if len(h) == 0 {
		return ""
	}
	if !isHTTPS(r) {
		return cookieValue(h, cookieName)
	}
	if v := cookieValue(h, secureCookieName); v != "" || p.CookieDomain == "" {
		return v
	}
	return cookieValue(h, domainCookieName)
}

// The session cookie is found, and taken out of what the upstream gets,
// without parsing the other cookies: a browser sends every cookie of the
// domain, often kilobytes of other apps' ones, on every request.

// findSessionCookie finds the first pair at or after from whose name is
// one of the session cookie's names, all of which end in cookieName, in
// one scan of a Cookie header line: the pair spans line[start:end], its
// value begins at value. A name inside another pair's name or value is no
// match.
func findSessionCookie(line string, from int) (name string, start, value, end int, ok bool) {
	const suffix = cookieName + "="
	for from < len(line) {
		i := strings.Index(line[from:], suffix)
		if i < 0 {
			return "", 0, 0, 0, false
		}
		start, value = from+i, from+i+len(suffix)
		from = value
		name = cookieName
		for _, n := range [...]string{secureCookieName, domainCookieName} {
			if prefix := n[:len(n)-len(cookieName)]; strings.HasSuffix(line[:start], prefix) {
				name, start = n, start-len(prefix)
			}
		}
		j := start
		for j > 0 && (line[j-1] == ' ' || line[j-1] == '\t') {
			j--
		}
		if j > 0 && line[j-1] != ';' {
			continue
		}
		end = strings.IndexByte(line[value:], ';')
		if end < 0 {
			end = len(line)
		} else {
			end += value
		}
		return name, start, value, end, true
	}
	return "", 0, 0, 0, false
}

// cookieValue is the value of the first session cookie named name with a
// value.
func cookieValue(lines []string, name string) string {
	for _, line := range lines {
		for from := 0; ; {
			n, _, value, end, ok := findSessionCookie(line, from)
			if !ok {
				break
			}
			if v := strings.Trim(strings.TrimRight(line[value:end], " \t"), `"`); n == name && v != "" {
				return v
			}
			from = end
		}
	}
	return ""
}

// dropSessionCookie removes the plugin's own cookie from what goes to the
// next handler: the upstream has no use for the token, and a backend that
// logs or reflects cookies must not be able to leak it. Only a line that
// holds it is rewritten.
func dropSessionCookie(h http.Header) {
	lines := h["Cookie"]
	kept := lines[:0]
	changed := false
	for _, line := range lines {
		if l := strippedLines.without(line); l != line {
			changed = true
			if strings.TrimSpace(l) == "" {
				continue
			}
			line = l
		}
		kept = append(kept, line)
	}
	switch {
	case !changed:
	case len(kept) == 0:
		delete(h, "Cookie")
	default:
		h["Cookie"] = kept
	}
}

// strippedLines remembers what withoutSessionCookies made of recent
// lines. A browser sends the same Cookie line on request after request,
// kilobytes of it; rebuilding it each time made the cookie path cost more
// than the bearer's in garbage to collect. The answer depends on the line
// alone, so sharing it between requests and users leaks nothing; a hit is
// faster only for a line already sent whole, session token included.
var strippedLines = &strippedCache{m: make(map[string]string)}

const (
	strippedCacheSize = 512
	strippedMaxLine   = 8 << 10 // longer lines are rebuilt every time
)

type strippedCache struct {
	mu sync.Mutex
	m  map[string]string
}

// without is withoutSessionCookies(line), from the cache when it can be.
func (c *strippedCache) without(line string) string {
	if len(line) > strippedMaxLine {
		return withoutSessionCookies(line)
	}
	c.mu.Lock()
	out, ok := c.m[line]
	c.mu.Unlock()
	if ok {
		return out
	}
	out = withoutSessionCookies(line)
	if out == line {
		// No session cookie: nothing to remember.
		return out
	}
	c.mu.Lock()
	if len(c.m) >= strippedCacheSize {
		for k := range c.m { // a random entry goes (map order)
			delete(c.m, k)
			break
		}
	}
	c.m[line] = out
	c.mu.Unlock()
	return out
}

// withoutSessionCookies is line without its session cookie pairs.
func withoutSessionCookies(line string) string {
	for from := 0; ; {
		_, start, _, end, ok := findSessionCookie(line, from)
		if !ok {
			return line
		}
		if end < len(line) {
			// Up to the next pair: "a=1; pwl_session=x; b=2" keeps "a=1; b=2".
			end++
			for end < len(line) && (line[end] == ' ' || line[end] == '\t') {
				end++
			}
		} else {
			// The last pair takes the separator before it.
			for start > 0 && (line[start-1] == ' ' || line[start-1] == '\t' || line[start-1] == ';') {
				start--
			}
		}
		line, from = line[:start]+line[end:], start
	}
}
