package passwordless

import (
	"bytes"
	"context"
	_ "embed"
	"html/template"
	"net/http"
	"strings"
)

// The browser sign-in: {prefix}/login asks for an email address or a
// number, then for the code, and sets a session cookie. It is plain HTML
// forms with no external assets; a few lines of script only fill in the
// code from a sign-in link.

//go:embed login.html
var loginPageSrc string

var loginPage = template.Must(template.New("login").Parse(loginPageSrc))

type loginView struct {
	Step       string // "alias" or "code"
	Action     string
	Next       string
	Alias      string
	AliasLabel string
	AliasNoun  string
	CodeLength int
	Error      string
	Info       string
	Nonce      string
	Passkey    passkeyPage
}

// serveLoginPage is GET {prefix}/login.
func (p *Passwordless) serveLoginPage(w http.ResponseWriter, r *http.Request) *apiError {
	v := p.loginView(r, r.URL.Query().Get("next"))
	// A sign-in link names the alias; the code stays in the fragment.
	if alias := r.URL.Query().Get("alias"); alias != "" {
		if a, e := p.anyAlias(alias); e == nil {
			v.Step, v.Alias = "code", a.Value
		}
	}
	p.renderLogin(w, http.StatusOK, v)
	return nil
}

// serveLoginForm is POST {prefix}/login: the two steps of the form.
func (p *Passwordless) serveLoginForm(w http.ResponseWriter, r *http.Request) *apiError {
	// Login CSRF: another site must not sign a visitor in, or send codes
	// in their name.
	if !sameOrigin(r) {
		return &apiError{status: http.StatusForbidden, detail: "Cross-site request refused."}
	}
	f, e := readFields(w, r, "alias", "code", "next", "passkey")
	v := p.loginView(r, f["next"])
	if e != nil {
		v.Error = e.detail
		p.renderLogin(w, e.status, v)
		return nil
	}
	if f["passkey"] != "" {
		return p.passkeyForm(w, r, v, f["passkey"])
	}
	a, e := p.anyAlias(f["alias"])
	if e != nil {
		v.Alias, v.Error = f["alias"], e.detail
		p.renderLogin(w, e.status, v)
		return nil
	}
	v.Alias = a.Value
	code := strings.TrimSpace(f["code"])
	if code == "" {
		if e := p.sendLoginCode(r, a); e != nil {
			return p.loginError(w, v, e)
		}
		v.Step, v.Info = "code", "If "+a.Value+" can sign in here, a code is on its way. Enter it below."
		p.renderLogin(w, http.StatusOK, v)
		return nil
	}
	v.Step = "code"
	if !isDigits(code, p.CodeLength) {
		return p.loginError(w, v, invalidCode)
	}
	if e := p.checkLock(r, a); e != nil {
		return p.loginError(w, v, e)
	}
	// Once the code is being redeemed the work must finish: a client that
	// goes away mid-request must not leave a burned code and no session.
	ctx := context.WithoutCancel(r.Context())
	u, s, _, e := p.signIn(ctx, r, a, code)
	if e != nil {
		return p.loginError(w, v, e)
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

// loginError shows the form again with the problem. Failures the user can
// act on keep their status; a server-side failure is a 503 page.
func (p *Passwordless) loginError(w http.ResponseWriter, v loginView, e *apiError) *apiError {
	v.Error = e.detail
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(e.retryAfter))
	}
	status := e.status
	if status >= 500 {
		v.Error, status = "Something went wrong on our side. Please try again in a moment.", http.StatusServiceUnavailable
	}
	p.renderLogin(w, status, v)
	return nil
}

func (p *Passwordless) loginView(r *http.Request, next string) loginView {
	v := loginView{Step: "alias", Action: p.Prefix + "/login", Next: p.safeNext(r, next), CodeLength: p.CodeLength, Passkey: p.passkeyPage()}
	_, email := p.senders[KindEmail]
	_, mobile := p.senders[KindMobile]
	switch {
	case email && mobile:
		v.AliasLabel, v.AliasNoun = "Email address or mobile number", "address or number"
	case mobile:
		v.AliasLabel, v.AliasNoun = "Mobile number", "number"
	default:
		v.AliasLabel, v.AliasNoun = "Email address", "address"
	}
	return v
}

func (p *Passwordless) renderLogin(w http.ResponseWriter, status int, v loginView) {
	nonce, err := randomID()
	if err != nil {
		writeError(w, p.internal("generating nonce", err))
		return
	}
	v.Nonce = nonce
	var b bytes.Buffer
	if err := loginPage.Execute(&b, v); err != nil {
		writeError(w, p.internal("rendering login page", err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; script-src 'nonce-"+nonce+"'; connect-src 'self'; form-action "+formAction(v.Next)+"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	w.Write(b.Bytes())
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
