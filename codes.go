package passwordless

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// aliasField reads the one alias field of a request: `email` or `mobile`.
func (p *Passwordless) aliasField(f map[string]string, kind AliasKind) (Alias, *apiError) {
	field := string(kind)
	v, ok := f[field]
	if !ok || strings.TrimSpace(v) == "" {
		return Alias{}, fieldError(field, "This field is required.")
	}
	var norm string
	var err error
	if kind == KindEmail {
		norm, err = normalizeEmail(v)
	} else {
		norm, err = normalizeMobile(v)
	}
	if err != nil {
		return Alias{}, fieldError(field, err.Error())
	}
	if kind == KindMobile && !p.allowedNumber(norm) {
		e := fieldError(field, "Numbers in this country are not accepted. Allowed calling codes: "+strings.Join(p.SMS.AllowedCountryCodes, ", ")+".")
		e.format, e.args = "Numbers in this country are not accepted. Allowed calling codes: %s.", []any{strings.Join(p.SMS.AllowedCountryCodes, ", ")}
		return Alias{}, e
	}
	return Alias{Kind: kind, Value: norm}, nil
}

// exchangeFields reads the body of /token and /verify, one alias and a
// code, and refuses an alias that is locked out.
func (p *Passwordless) exchangeFields(w http.ResponseWriter, r *http.Request) (Alias, string, *apiError) {
	f, e := readFields(w, r, "email", "mobile", "token")
	if e != nil {
		return Alias{}, "", e
	}
	hasEmail, hasMobile := strings.TrimSpace(f["email"]) != "", strings.TrimSpace(f["mobile"]) != ""
	var kind AliasKind
	switch {
	case hasEmail && hasMobile:
		return Alias{}, "", badRequest("Give either an email address or a mobile number, not both.")
	case hasEmail:
		kind = KindEmail
	case hasMobile:
		kind = KindMobile
	default:
		return Alias{}, "", badRequest("Give an email address or a mobile number.")
	}
	if _, ok := p.senders[kind]; !ok {
		return Alias{}, "", fieldError(string(kind), "Login by "+string(kind)+" is not enabled.")
	}
	a, e := p.aliasField(f, kind)
	if e != nil {
		return Alias{}, "", e
	}
	code := strings.TrimSpace(f["token"])
	if code == "" {
		return Alias{}, "", fieldError("token", "This field is required.")
	}
	if !isDigits(code, p.CodeLength) {
		return Alias{}, "", fieldError("token", "The code is invalid or has expired.")
	}
	if e := p.checkLock(r, a); e != nil {
		return Alias{}, "", e
	}
	return a, code, nil
}

// sendFields reads the body of a send endpoint. drfpasswordless clients
// often send the other alias field empty or null; it is accepted only so.
func (p *Passwordless) sendFields(w http.ResponseWriter, r *http.Request, kind AliasKind) (map[string]string, *apiError) {
	f, e := readFields(w, r, string(KindEmail), string(KindMobile))
	if e != nil {
		return nil, e
	}
	other := KindMobile
	if kind == KindMobile {
		other = KindEmail
	}
	if strings.TrimSpace(f[string(other)]) != "" {
		return nil, fieldError(string(other), "This field is not accepted here.")
	}
	return f, nil
}

// sendTarget reads the alias a code is to be sent to.
func (p *Passwordless) sendTarget(w http.ResponseWriter, r *http.Request, kind AliasKind) (Alias, *apiError) {
	f, e := p.sendFields(w, r, kind)
	if e != nil {
		return Alias{}, e
	}
	return p.aliasField(f, kind)
}

var sentDetail = map[AliasKind]string{
	KindEmail:  "A login token has been sent to your email.",
	KindMobile: "A login token has been sent to your mobile.",
}

// serveSend is POST {prefix}/email and /mobile: send a login code.
func (p *Passwordless) serveSend(kind AliasKind) func(http.ResponseWriter, *http.Request) *apiError {
	return func(w http.ResponseWriter, r *http.Request) *apiError {
		a, e := p.sendTarget(w, r, kind)
		if e != nil {
			return e
		}
		if e := p.sendLoginCode(r, a); e != nil {
			return e
		}
		writeJSON(w, http.StatusOK, map[string]string{"detail": p.pages.translate(r, sentDetail[kind])})
		return nil
	}
}

// sendLoginCode queues a login code for a. Every alias takes the same
// steps, down to the outbox row; only the row's deliver flag differs, and
// the worker drops what is not to be sent.
func (p *Passwordless) sendLoginCode(r *http.Request, a Alias) *apiError {
	// Every alias costs the same lookup, so the time tells nothing.
	u, err := p.store.UserByAlias(r.Context(), p.Realm, a)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return p.internal("looking up user", err)
	}
	known := err == nil
	// An alias that may not sign in (unknown with registration closed,
	// outside the allow list, or a disabled user's) gets the same work,
	// answer and time as any other, but nothing is sent and its code can
	// never log in.
	deliver := p.access.admits(a) && (known && !u.Disabled || !known && *p.RegisterNewUsers)
	if _, demo := p.demoCode(a); demo {
		// The demo code is fixed and known: nothing to send.
		deliver = false
	}
	return p.queueCode(r, a, purposeLogin, "", deliver)
}

// queueCode applies the send limits, makes a code for alias and purpose,
// and stores its hash and its message in one transaction. The request
// ends there, in the same time whatever the alias and whatever the
// provider does; the outbox workers deliver.
func (p *Passwordless) queueCode(r *http.Request, a Alias, purpose, userID string, deliver bool) *apiError {
	if p.outbox.failing(a.Kind) {
		return deliveryFailing
	}
	code, err := newCode(p.CodeLength)
	if err != nil {
		return p.internal("generating code", err)
	}
	id, err := randomID()
	if err != nil {
		return p.internal("generating code id", err)
	}
	t := now()
	exp := t.Add(time.Duration(p.CodeTTL))
	c := Code{
		ID: id, Alias: p.aliasKey(a), Purpose: purpose, UserID: userID,
		Hash:      codeHash(p.hmacKey, p.aliasKey(a), purpose, code),
		ExpiresAt: exp, CreatedAt: t,
	}
	lang, _ := p.pages.language(r)
	m := OutboxMessage{ID: id, Queue: p.outbox.queues[a.Kind], Channel: a.Kind, To: a.Value, Purpose: purpose,
		Deliver: deliver, Lang: lang, ExpiresAt: exp, CreatedAt: t}
	if deliver {
		// The message must carry the code in clear; the worker deletes it
		// with the row once it is sent or dropped.
		m.Code = code
	}
	wait, by, err := p.store.QueueCode(r.Context(), p.sendLimits(r, a), c, m, t)
	if err != nil {
		return p.internal("queueing code", err)
	}
	if wait > 0 {
		countRateLimited(limitName(by))
		return tooMany(wait)
	}
	p.outbox.notify(a.Kind)
	return nil
}

// invalidCode is the one answer to every failed exchange: wrong, expired,
// used, unknown alias or another alias's code all look the same.
var invalidCode = &apiError{status: http.StatusBadRequest, detail: "The code is invalid or has expired."}

// redeem checks a presented code for alias and purpose. It answers the
// stored code on success; a failure counts toward the alias's lockout.
func (p *Passwordless) redeem(ctx context.Context, ip string, a Alias, purpose, code string) (Code, *apiError) {
	key := p.aliasKey(a)
	stored, res, err := p.store.RedeemCode(ctx, key, purpose, p.codeMatcher(key, purpose, code), p.MaxAttempts, now())
	if err != nil {
		return Code{}, p.internal("redeeming code", err)
	}
	if res != CodeOK {
		return Code{}, p.failed(ctx, ip, a, res != CodeMissing)
	}
	return stored, nil
}

// codeMatcher tells whether a stored hash is that of code, in constant
// time.
func (p *Passwordless) codeMatcher(key, purpose, code string) func(hash []byte) bool {
	return func(hash []byte) bool {
		return subtle.ConstantTimeCompare(hash, codeHash(p.hmacKey, key, purpose, code)) == 1
	}
}

// demoCode returns the fixed code of a demo user.
func (p *Passwordless) demoCode(a Alias) (string, bool) {
	for _, d := range p.DemoUsers {
		if da, err := parseAlias(d.Alias); err == nil && da == a {
			return d.Code, true
		}
	}
	return "", false
}

// serveToken is POST {prefix}/token: exchange a code for tokens.
func (p *Passwordless) serveToken(w http.ResponseWriter, r *http.Request) *apiError {
	a, code, e := p.exchangeFields(w, r)
	if e != nil {
		return e
	}
	ctx := context.WithoutCancel(r.Context())
	u, s, refresh, e := p.signIn(ctx, r, a, code)
	if e != nil {
		return e
	}
	resp, e := p.tokens(u, s.ID, refresh)
	if e != nil {
		return e
	}
	p.loggedIn(ctx, a, u, s.ID)
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// signIn redeems a login code (or a demo user's fixed code) for a and
// starts a session for its user, created if registration is open. It
// returns the session and its first refresh token. A success is one write
// transaction in the store.
func (p *Passwordless) signIn(ctx context.Context, r *http.Request, a Alias, code string) (User, Session, string, *apiError) {
	client, key := p.clientKey(r), p.aliasKey(a)
	in := SignIn{Realm: p.Realm, Alias: a, Key: key, MaxAttempts: p.MaxAttempts, Create: *p.RegisterNewUsers}
	if demo, isDemo := p.demoCode(a); isDemo {
		// A fixed code is only as safe as the limits around it.
		if e := p.allowIP(r); e != nil {
			return User{}, Session{}, "", e
		}
		// A demo alias logs in only with its fixed code.
		if subtle.ConstantTimeCompare([]byte(demo), []byte(code)) != 1 {
			return User{}, Session{}, "", p.failed(ctx, client, a, true)
		}
		in.Create = true
	} else if !p.access.admits(a) {
		// Outside the allow list: the failure of a wrong code, as for an
		// unknown alias.
		if _, e := p.redeem(ctx, client, a, purposeLogin, code); e != nil {
			return User{}, Session{}, "", e
		}
		return User{}, Session{}, "", p.failed(ctx, client, a, true)
	} else {
		in.Match = p.codeMatcher(key, purposeLogin, code)
	}
	s, refresh, e := p.sessionFor(r, "")
	if e != nil {
		return User{}, Session{}, "", e
	}
	in.Session, in.RefreshHash = s, opaqueHash(refresh)
	res, err := p.store.SignIn(ctx, in, s.CreatedAt)
	switch {
	case errors.Is(err, ErrNotFound):
		return User{}, Session{}, "", p.failed(ctx, client, a, true)
	case err != nil:
		return User{}, Session{}, "", p.internal("signing in", err)
	case res.Code != CodeOK:
		return User{}, Session{}, "", p.failed(ctx, client, a, res.Code != CodeMissing)
	}
	if res.Created {
		p.audit(ctx, auditUserCreated, auditEvent{UserID: res.User.ID, Channel: a.Kind})
	}
	s.UserID = res.User.ID
	return res.User, s, refresh, nil
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
		// An alias outside the allow list gets what a login code
		// request for it gets: the same answer, and nothing sent.
		if e := p.queueCode(r, a, purposeVerify, c.Subject, p.access.admits(a)); e != nil {
			return e
		}
		writeJSON(w, http.StatusOK, map[string]string{"detail": p.pages.translate(r, "A verification code has been sent to your "+string(kind)+".")})
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
	stored, e := p.redeem(ctx, p.clientKey(r), a, purposeVerify, code)
	if e != nil {
		return e
	}
	// The code proves the alias to the account that asked for it, not to
	// whoever presents it.
	if stored.UserID != c.Subject || !p.access.admits(a) {
		return p.failed(ctx, p.clientKey(r), a, true)
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

// DemoUser is an account that logs in with a fixed code.
type DemoUser struct {
	// The email address or E.164 number of the account.
	Alias string `json:"alias"`
	// The code that logs it in; it is never sent.
	Code string `json:"code"`
}

// provisionCodes fills in the code options' defaults and resolves the demo
// users' placeholders.
func (p *Passwordless) provisionCodes(env func(*string)) {
	if p.CodeLength == 0 {
		p.CodeLength = defaultCodeLength
	}
	if p.CodeTTL == 0 {
		p.CodeTTL = caddy.Duration(defaultCodeTTL)
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = defaultMaxAttempts
	}
	if p.RegisterNewUsers == nil {
		t := true
		p.RegisterNewUsers = &t
	}
	for i := range p.DemoUsers {
		env(&p.DemoUsers[i].Alias)
		env(&p.DemoUsers[i].Code)
	}
}

func (p *Passwordless) validateCodes() error {
	if err := checkCodeLength(p.CodeLength); err != nil {
		return err
	}
	if err := checkCodeTTL(time.Duration(p.CodeTTL)); err != nil {
		return err
	}
	if err := checkMaxAttempts(p.MaxAttempts); err != nil {
		return err
	}
	for _, d := range p.DemoUsers {
		if _, err := parseAlias(d.Alias); err != nil {
			return fmt.Errorf("demo_user %q: %v", d.Alias, err)
		}
		if !isDigits(d.Code, p.CodeLength) {
			return fmt.Errorf("demo_user %q: the code must be %d digits", d.Alias, p.CodeLength)
		}
	}
	return nil
}

func checkCodeLength(n int) error {
	if n < 6 || n > 10 {
		return fmt.Errorf("code_length must be between 6 and 10, not %d", n)
	}
	return nil
}

func checkCodeTTL(d time.Duration) error {
	if d < 0 || d > 24*time.Hour {
		return fmt.Errorf("code_ttl must be positive and at most 24h, not %s", d)
	}
	return nil
}

func checkMaxAttempts(n int) error {
	if n < 1 || n > 100 {
		return fmt.Errorf("max_attempts must be between 1 and 100, not %d", n)
	}
	return nil
}
