package passwordless

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// serveRefresh is POST {prefix}/refresh: rotate a refresh token.
func (p *Passwordless) serveRefresh(w http.ResponseWriter, r *http.Request) *apiError {
	f, e := readFields(w, r, "refresh_token")
	if e != nil {
		return e
	}
	old := f["refresh_token"]
	if old == "" {
		return fieldError("refresh_token", "This field is required.")
	}
	refresh, err := randomToken()
	if err != nil {
		return p.internal("generating refresh token", err)
	}
	ctx := context.WithoutCancel(r.Context())
	t := now()
	s, err := p.store.RotateRefresh(ctx, opaqueHash(old), opaqueHash(refresh), t.Add(time.Duration(p.JWT.RefreshTTL)), t)
	switch {
	case errors.Is(err, ErrRefreshReused):
		p.verified.endSession(s.ID, t)
		p.logger.Warn("refresh token reused: session revoked", zap.String("user", s.UserID), zap.String("session", s.ID))
		p.audit(ctx, auditRefreshReuse, auditEvent{UserID: s.UserID, SessionID: s.ID})
		return &apiError{status: http.StatusUnauthorized, detail: "The refresh token was already used; the session has ended."}
	case errors.Is(err, ErrNotFound):
		return &apiError{status: http.StatusUnauthorized, detail: "The refresh token is invalid or has expired."}
	case err != nil:
		return p.internal("rotating refresh token", err)
	}
	u, err := p.store.UserByID(ctx, s.UserID)
	if err != nil {
		return p.internal("reading user", err)
	}
	// Whoever may no longer sign in gets no new token: the session ends.
	if u.Realm != p.Realm || u.Disabled || !p.access.admitsUser(u) {
		if err := p.store.RevokeSession(ctx, s.ID); err != nil {
			return p.internal("revoking session", err)
		}
		p.verified.endSession(s.ID, t)
		return &apiError{status: http.StatusUnauthorized, detail: "The refresh token is invalid or has expired."}
	}
	resp, e := p.tokens(u, s.ID, refresh)
	if e != nil {
		return e
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// serveLogout is POST {prefix}/logout: end the session of the bearer, or
// of the cookie sent from a page of this site or of a host of
// return_hosts (an app's sign-out button), and clear the cookie under
// every name and Domain, so that no host of the domain stays signed in.
func (p *Passwordless) serveLogout(w http.ResponseWriter, r *http.Request) *apiError {
	c, _, reason := p.authenticateFrom(r, p.fromAllowedPage)
	byCookie := bearerToken(r.Header.Get("Authorization")) == "" && p.cookieToken(r) != ""
	// A browser whose session already ended elsewhere still gets its
	// cookie cleared and goes on.
	if c == nil && (!byCookie || reason == reasonCrossSite) {
		return authFailure(reason)
	}
	if c != nil {
		if err := p.store.RevokeSession(context.WithoutCancel(r.Context()), c.SessionID); err != nil {
			return p.internal("revoking session", err)
		}
		p.verified.endSession(c.SessionID, now())
		p.audit(r.Context(), auditLogout, auditEvent{UserID: c.Subject, SessionID: c.SessionID})
	}
	w.Header().Set("Cache-Control", "no-store")
	if byCookie {
		p.clearSessionCookies(w, r)
		// The sign-out button of the 403 page leads on to the sign-in.
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		if next := r.PostFormValue("next"); next != "" && (p.loginURL != nil || len(p.senders) > 0) {
			http.Redirect(w, r, p.signInPage(p.safeNext(r, next)), http.StatusSeeOther)
			return nil
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type meResponse struct {
	ID             string  `json:"id"`
	Email          *string `json:"email"`
	Mobile         *string `json:"mobile"`
	EmailVerified  bool    `json:"email_verified"`
	MobileVerified bool    `json:"mobile_verified"`
}

// newMeResponse is the user as /me shows it; the command line's view
// starts from it.
func newMeResponse(u User) meResponse {
	return meResponse{ID: u.ID, Email: orNull(u.Email), Mobile: orNull(u.Mobile),
		EmailVerified: u.EmailVerified, MobileVerified: u.MobileVerified}
}

func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// serveMe is GET {prefix}/me: who the bearer is.
func (p *Passwordless) serveMe(w http.ResponseWriter, r *http.Request) *apiError {
	c, e := p.bearer(r)
	if e != nil {
		return e
	}
	u, err := p.store.UserByID(r.Context(), c.Subject)
	if errors.Is(err, ErrNotFound) {
		return &apiError{status: http.StatusUnauthorized, detail: "The token is invalid or has expired."}
	}
	if err != nil {
		return p.internal("reading user", err)
	}
	writeJSON(w, http.StatusOK, newMeResponse(u))
	return nil
}

type tokenResponse struct {
	Token        string `json:"token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
}

// sessionFor is a new session of userID, not stored yet, that lives
// refresh_ttl, and its first refresh token. The client's address is kept
// for the operator.
func (p *Passwordless) sessionFor(r *http.Request, userID string) (Session, string, *apiError) {
	sid, err := randomID()
	if err != nil {
		return Session{}, "", p.internal("generating session id", err)
	}
	refresh, err := randomToken()
	if err != nil {
		return Session{}, "", p.internal("generating refresh token", err)
	}
	t := now()
	return Session{ID: sid, UserID: userID, CreatedAt: t, ExpiresAt: t.Add(time.Duration(p.JWT.RefreshTTL)), ClientIP: clientIP(r)}, refresh, nil
}

// tokens issues an access token for u in session sid, next to refresh.
func (p *Passwordless) tokens(u User, sid, refresh string) (tokenResponse, *apiError) {
	ttl := time.Duration(p.JWT.TTL)
	tok, e := p.accessToken(u, sid, ttl)
	if e != nil {
		return tokenResponse{}, e
	}
	return tokenResponse{Token: tok, RefreshToken: refresh, TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second)}, nil
}

// accessToken signs a token for u in session sid that lives ttl.
func (p *Passwordless) accessToken(u User, sid string, ttl time.Duration) (string, *apiError) {
	jti, err := randomID()
	if err != nil {
		return "", p.internal("generating token id", err)
	}
	t := now()
	c := &Claims{
		Email: u.Email, Mobile: u.Mobile, SessionID: sid, Roles: p.access.roles(u),
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: u.ID, ID: jti, Issuer: p.JWT.Issuer,
			IssuedAt: jwt.NewNumericDate(t), ExpiresAt: jwt.NewNumericDate(t.Add(ttl)),
		},
	}
	if p.JWT.Audience != "" {
		c.Audience = jwt.ClaimStrings{p.JWT.Audience}
	}
	tok, err := p.keys.sign(c)
	if err != nil {
		return "", p.internal("signing token", err)
	}
	return tok, nil
}

// serveLogoutAll is POST {prefix}/logout/all: end every session of the
// bearer's user, on every instance within sessionRecheck.
func (p *Passwordless) serveLogoutAll(w http.ResponseWriter, r *http.Request) *apiError {
	c, e := p.bearer(r)
	if e != nil {
		return e
	}
	t := now()
	if _, err := p.store.RevokeSessions(context.WithoutCancel(r.Context()), c.Subject, t); err != nil {
		return p.internal("revoking sessions", err)
	}
	p.verified.endUser(c.Subject, t)
	p.audit(r.Context(), auditSessionsRevoked, auditEvent{UserID: c.Subject, SessionID: c.SessionID})
	if p.cookieToken(r) != "" {
		p.clearSessionCookies(w, r)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (p *Passwordless) sessionCookie(r *http.Request, value string, expires time.Time) *http.Cookie {
	c := &http.Cookie{Name: cookieName, Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, Domain: p.CookieDomain}
	if isHTTPS(r) {
		c.Name, c.Secure = secureCookieName, true
		if p.CookieDomain != "" {
			c.Name = domainCookieName
		}
	}
	c.Expires = expires
	c.MaxAge = int(expires.Sub(now()) / time.Second)
	return c
}

// clearSessionCookies ends the session cookie under every name and Domain
// it may have been set with.
func (p *Passwordless) clearSessionCookies(w http.ResponseWriter, r *http.Request) {
	clear := func(name, domain string, secure bool) {
		http.SetCookie(w, &http.Cookie{Name: name, Path: "/", Domain: domain, MaxAge: -1, HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode})
	}
	https := isHTTPS(r)
	clear(cookieName, "", https)
	if https {
		clear(secureCookieName, "", true)
		clear(domainCookieName, "", true)
	}
	if p.CookieDomain != "" {
		clear(cookieName, p.CookieDomain, https)
		if https {
			clear(domainCookieName, p.CookieDomain, true)
		}
	}
}
