package passwordless

import (
	"context"
	_ "embed"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
)

// The browser side of passkeys: the account page, where a signed-in user
// sees their aliases and passkeys, and passkeys on the sign-in page.

//go:embed pages/passkeys.js
var passkeysScript string

type accountPasskey struct {
	ID, Name, Created, LastUsed string
	BackedUp                    bool
}

// serveAccount is GET {prefix}/account: the signed-in user's aliases and
// passkeys. A visitor who is not signed in is sent to sign in first.
func (p *Passwordless) serveAccount(w http.ResponseWriter, r *http.Request) *apiError {
	c, _, _ := p.authenticate(r)
	if c == nil {
		http.Redirect(w, r, p.Prefix+"/login?next="+url.QueryEscape(p.Prefix+"/account"), http.StatusFound)
		return nil
	}
	u, err := p.store.UserByID(r.Context(), c.Subject)
	if err != nil {
		return p.internal("reading user", err)
	}
	v := p.pages.view(r)
	v.Prefix, v.Action, v.Next = p.Prefix, p.Prefix+"/logout", "/"
	v.Email, v.Mobile, v.Passkeys, v.Script = u.Email, u.Mobile, p.Passkeys != nil, template.JS(passkeysScript)
	if v.Passkeys {
		list, err := p.store.Passkeys(r.Context(), u.ID)
		if err != nil {
			return p.internal("listing passkeys", err)
		}
		for _, pk := range list {
			ap := accountPasskey{ID: base64.RawURLEncoding.EncodeToString(pk.ID), Name: pk.Name,
				Created: pk.CreatedAt.UTC().Format("2006-01-02"), BackedUp: pk.BackupState}
			if !pk.LastUsedAt.IsZero() {
				ap.LastUsed = pk.LastUsedAt.UTC().Format("2006-01-02 15:04 UTC")
			}
			v.List = append(v.List, ap)
		}
	}
	// Its scripts may call this site's API (connect-src), nothing else.
	if err := p.pages.render(w, http.StatusOK, "account", v, "connect-src 'self'; form-action 'self'; "); err != nil {
		return p.internal("rendering account page", err)
	}
	return nil
}

// passkeyPage is what the sign-in page needs to offer passkeys.
type passkeyPage struct {
	On      bool
	Prefix  string
	RPID    string
	Unknown string // a credential id to signal as unknown
	Script  template.JS
}

func (p *Passwordless) passkeyPage() passkeyPage {
	if p.Passkeys == nil {
		return passkeyPage{}
	}
	return passkeyPage{On: true, Prefix: p.Prefix, RPID: p.Passkeys.RPID, Script: template.JS(passkeysScript)}
}

// passkeyForm is POST {prefix}/login with a `passkey` field: the
// assertion the page's script got, for a session cookie as a code gives.
func (p *Passwordless) passkeyForm(w http.ResponseWriter, r *http.Request, v pageView, assertion string) *apiError {
	if p.Passkeys == nil {
		return p.loginError(w, r, v, passkeyFailure)
	}
	ctx := context.WithoutCancel(r.Context())
	res := p.passkeyLogin(ctx, r, []byte(assertion))
	if res.err != nil {
		v.Passkey.Unknown = res.unknown
		return p.loginError(w, r, v, res.err)
	}
	s := res.session
	// As for a code: the cookie's token lives as long as its session.
	tok, e := p.accessToken(res.user, s.ID, s.ExpiresAt.Sub(now()))
	if e != nil {
		return e
	}
	p.passkeyLoggedIn(ctx, res, s.ID)
	http.SetCookie(w, p.sessionCookie(r, tok, s.ExpiresAt))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, v.Next, http.StatusSeeOther)
	return nil
}
