package passwordless

import (
	"context"
	"net/http"
	"net/url"
	"strings"
)

// The browser sign-in: {prefix}/login asks for an email address or a
// number, then for the code, and sets a session cookie. It is plain HTML
// forms with no external assets; a few lines of script only fill in the
// code from a sign-in link. The pages themselves are in pages/.

// serveLoginPage is GET {prefix}/login.
func (p *Passwordless) serveLoginPage(w http.ResponseWriter, r *http.Request) *apiError {
	v := p.loginView(r, r.URL.Query().Get("next"))
	// A sign-in link names the alias; the code stays in the fragment.
	if alias := r.URL.Query().Get("alias"); alias != "" {
		if a, e := p.anyAlias(alias); e == nil {
			v.Step, v.Alias = "code", a.Value
		}
	}
	return p.renderLogin(w, http.StatusOK, v)
}

// serveLoginForm is POST {prefix}/login: the two steps of the form.
func (p *Passwordless) serveLoginForm(w http.ResponseWriter, r *http.Request) *apiError {
	// Login CSRF: another site must not sign a visitor in, or send codes
	// in their name.
	if !sameOrigin(r) {
		return crossSiteError
	}
	f, e := readFields(w, r, "alias", "code", "next", "passkey", "lang", "link")
	if f["lang"] != "" && r.URL.Query().Get("lang") == "" {
		// The form keeps the page's language in a field; the choice reads
		// the query.
		q := r.URL.Query()
		q.Set("lang", f["lang"])
		r.URL.RawQuery = q.Encode()
	}
	v := p.loginView(r, f["next"])
	if e != nil {
		v.Error = p.pages.localize(r, e).detail
		return p.renderLogin(w, e.status, v)
	}
	if f["passkey"] != "" {
		return p.passkeyForm(w, r, v, f["passkey"])
	}
	a, e := p.anyAlias(f["alias"])
	if e != nil {
		v.Alias, v.Error = f["alias"], p.pages.localize(r, e).detail
		return p.renderLogin(w, e.status, v)
	}
	v.Alias = a.Value
	code := strings.TrimSpace(f["code"])
	if code == "" {
		if e := p.sendLoginCode(r, a); e != nil {
			return p.loginError(w, r, v, e)
		}
		v.Step = "code"
		v.Info = v.T("login.sent", a.Value)
		return p.renderLogin(w, http.StatusOK, v)
	}
	v.Step = "code"
	if !isDigits(code, p.CodeLength) {
		return p.loginError(w, r, v, invalidCode)
	}
	if e := p.checkLock(r, a); e != nil {
		return p.loginError(w, r, v, e)
	}
	// Once the code is being redeemed the work must finish: a client that
	// goes away mid-request must not leave a burned code and no session.
	ctx := context.WithoutCancel(r.Context())
	u, s, _, e := p.signIn(ctx, r, a, code)
	if e != nil {
		if e == invalidCode && f["link"] != "" {
			// The code came from a sign-in link: say the link is spent
			// rather than that the person typed a wrong code.
			return p.problemPage(w, r, v, e.status, "expired")
		}
		return p.loginError(w, r, v, e)
	}
	// The cookie's token lives as long as its session; logout and the
	// per-request session check end it, not its exp.
	tok, e := p.accessToken(u, s.ID, s.ExpiresAt.Sub(now()))
	if e != nil {
		return e
	}
	p.loggedIn(ctx, a, u, s.ID)
	http.SetCookie(w, p.sessionCookie(r, tok, s.ExpiresAt))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, v.Next, http.StatusSeeOther)
	return nil
}

// loginError shows the form again with the problem the user can act on.
// Being limited (429) and a failure on our side (503) get pages of their
// own, which keep the status.
func (p *Passwordless) loginError(w http.ResponseWriter, r *http.Request, v pageView, e *apiError) *apiError {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(e.retryAfter))
	}
	switch {
	case e.status >= 500:
		return p.problemPage(w, r, v, http.StatusServiceUnavailable, "unavailable")
	case e.status == http.StatusTooManyRequests:
		v.Error = p.pages.localize(r, e).detail
		return p.problemPage(w, r, v, e.status, "limited")
	}
	v.Error = p.pages.localize(r, e).detail
	return p.renderLogin(w, e.status, v)
}

// problemPage is the page version of 429, 503 and a spent sign-in link:
// what happened, and a way back to the sign-in form.
func (p *Passwordless) problemPage(w http.ResponseWriter, r *http.Request, v pageView, status int, problem string) *apiError {
	v.Problem = problem
	v.Again = v.withLang(p.Prefix + "/login?next=" + url.QueryEscape(v.Next))
	if err := p.pages.render(w, status, "problem", v, "form-action "+formAction(v.Next)+"; "); err != nil {
		return p.internal("rendering problem page", err)
	}
	return nil
}

func (p *Passwordless) loginView(r *http.Request, next string) pageView {
	v := p.pages.view(r)
	v.Step, v.Action, v.Next, v.CodeLength = "alias", p.Prefix+"/login", p.safeNext(r, next), p.CodeLength
	v.Passkey = p.passkeyPage()
	_, email := p.senders[KindEmail]
	_, mobile := p.senders[KindMobile]
	switch {
	case email && mobile:
		v.AliasKind = "any"
	case mobile:
		v.AliasKind = "mobile"
	default:
		v.AliasKind = "email"
	}
	return v
}

func (p *Passwordless) renderLogin(w http.ResponseWriter, status int, v pageView) *apiError {
	if err := p.pages.render(w, status, "login", v, "connect-src 'self'; form-action "+formAction(v.Next)+"; "); err != nil {
		return p.internal("rendering login page", err)
	}
	return nil
}

// anyAlias reads what a person typed into the sign-in form: an email
// address if it has an @, else a number.
func (p *Passwordless) anyAlias(s string) (Alias, *apiError) {
	kind := KindMobile
	if strings.Contains(s, "@") {
		kind = KindEmail
	}
	if _, ok := p.senders[kind]; !ok {
		if kind == KindEmail {
			return Alias{}, fieldError("alias", "Sign-in by email is not available here; enter a mobile number.")
		}
		return Alias{}, fieldError("alias", "Enter a valid email address.")
	}
	return p.aliasField(map[string]string{string(kind): s}, kind)
}

// wantsLoginPage reports whether an unauthenticated request is a browser
// navigation that should land on the sign-in page rather than get a 401.
func wantsLoginPage(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && strings.Contains(r.Header.Get("Accept"), "text/html")
}
