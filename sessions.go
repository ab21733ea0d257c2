package passwordless

import (
	"context"
	"errors"
	"net/http"
	"time"

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

// bearer authenticates an endpoint request by its bearer token.
func (p *Passwordless) bearer(r *http.Request) (*Claims, *apiError) {
	c, _, reason := p.authenticate(r)
	if c == nil {
		return nil, authFailure(reason)
	}
	return c, nil
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
	writeJSON(w, http.StatusOK, meResponse{ID: u.ID, Email: orNull(u.Email), Mobile: orNull(u.Mobile),
		EmailVerified: u.EmailVerified, MobileVerified: u.MobileVerified})
	return nil
}

// serveJWKS is GET {prefix}/jwks.json: the public keys, for services that
// verify tokens themselves.
func (p *Passwordless) serveJWKS(w http.ResponseWriter, r *http.Request) *apiError {
	body, err := p.keys.jwks()
	if err != nil {
		return p.internal("building JWK set", err)
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(body)
	return nil
}

// serveSendVerify is POST {prefix}/verify/email and /verify/mobile: send a
// code that proves an alias to add to the signed-in account.
func (p *Passwordless) serveSendVerify(kind AliasKind) func(http.ResponseWriter, *http.Request) *apiError {
	return func(w http.ResponseWriter, r *http.Request) *apiError {
		c, e := p.bearer(r)
		if e != nil {
			return e
		}
		a, e := p.sendTarget(w, r, kind)
		if e != nil {
			return e
		}
		if e := p.queueCode(r, a, purposeVerify, c.Subject, true); e != nil {
			return e
		}
		writeJSON(w, http.StatusOK, map[string]string{"detail": "A verification code has been sent to your " + string(kind) + "."})
		return nil
	}
}

// serveVerify is POST {prefix}/verify: redeem a verification code and link
// the alias to the signed-in account.
func (p *Passwordless) serveVerify(w http.ResponseWriter, r *http.Request) *apiError {
	c, e := p.bearer(r)
	if e != nil {
		return e
	}
	a, code, e := p.exchangeFields(w, r)
	if e != nil {
		return e
	}
	ctx := context.WithoutCancel(r.Context())
	stored, e := p.redeem(ctx, clientIP(r), a, purposeVerify, code)
	if e != nil {
		return e
	}
	// The code proves the alias to the account that asked for it, not to
	// whoever presents it.
	if stored.UserID != c.Subject {
		return p.failed(ctx, clientIP(r), a)
	}
	u, err := p.store.LinkAlias(ctx, c.Subject, a)
	if errors.Is(err, ErrAliasTaken) {
		return &apiError{status: http.StatusConflict, detail: "This " + string(a.Kind) + " belongs to another account.", field: string(a.Kind)}
	}
	if err != nil {
		return p.internal("linking alias", err)
	}
	if err := p.store.ResetFailures(ctx, p.aliasKey(a)); err != nil {
		return p.internal("resetting failures", err)
	}
	p.audit(ctx, auditAliasLinked, auditEvent{UserID: u.ID, Channel: a.Kind, SessionID: c.SessionID})
	writeJSON(w, http.StatusOK, meResponse{ID: u.ID, Email: orNull(u.Email), Mobile: orNull(u.Mobile),
		EmailVerified: u.EmailVerified, MobileVerified: u.MobileVerified})
	return nil
}
