package passwordless

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// defaultRealm is the realm of blocks that name none, and of every user
// that existed before realms did.
const defaultRealm = "default"

var realmName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// realmKey scopes a key of codes, limits, failures or secrets to a realm.
// The default realm keeps the bare key, so what was stored before realms
// existed stays valid; other realms' keys start with "realm:", which no
// bare key does.
func realmKey(realm, key string) string {
	if realm == defaultRealm || realm == "" {
		return key
	}
	return "realm:" + realm + "/" + key
}

// aliasKey is the key of a's codes, limits and failures in this realm.
func (p *Passwordless) aliasKey(a Alias) string { return realmKey(p.Realm, a.Key()) }

// roleName is what a role may be called: it travels in a comma-separated
// header and is stored comma-separated.
var roleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)

// normalizeRoles checks role names and returns them sorted, without
// duplicates.
func normalizeRoles(roles []string) ([]string, error) {
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		if !roleName.MatchString(r) {
			return nil, fmt.Errorf("%q is not a role name (letters, digits, and _ . : - inside)", r)
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func joinRoles(roles []string) string { return strings.Join(roles, ",") }

func splitRoles(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// An aliasPattern says which aliases an allow line or a rule admits: an
// exact address or number, every address of one domain (`*@domain`) or of
// its subdomains (`*@*.domain`), or every number with a prefix (`+44*`).
type aliasPattern struct {
	kind   AliasKind
	exact  string
	domain string // *@domain
	sub    string // *@*.domain: ".domain"
	prefix string // +44*: "+44"
}

var numberPrefix = regexp.MustCompile(`^\+[1-9][0-9]{0,14}$`)

func parsePattern(s string) (aliasPattern, error) {
	bad := func() (aliasPattern, error) {
		return aliasPattern{}, fmt.Errorf("%q is not a pattern: use an address, *@domain, *@*.domain, a number like +15551234567 or a prefix like +44*", s)
	}
	domain := func(d string) (string, bool) {
		v, err := normalizeEmail("x@" + d)
		return strings.TrimPrefix(v, "x@"), err == nil
	}
	switch {
	case strings.HasPrefix(s, "*@*."):
		d, ok := domain(s[len("*@*."):])
		if !ok {
			return bad()
		}
		return aliasPattern{kind: KindEmail, sub: "." + d}, nil
	case strings.HasPrefix(s, "*@"):
		d, ok := domain(s[len("*@"):])
		if !ok {
			return bad()
		}
		return aliasPattern{kind: KindEmail, domain: d}, nil
	case strings.HasPrefix(s, "+") && strings.HasSuffix(s, "*"):
		if !numberPrefix.MatchString(s[:len(s)-1]) {
			return bad()
		}
		return aliasPattern{kind: KindMobile, prefix: s[:len(s)-1]}, nil
	case strings.Contains(s, "*"):
		return bad()
	case strings.Contains(s, "@"):
		v, err := normalizeEmail(s)
		if err != nil {
			return bad()
		}
		return aliasPattern{kind: KindEmail, exact: v}, nil
	default:
		// Exactly E.164 as written: a pattern is not what a person typed.
		if !e164.MatchString(s) {
			return bad()
		}
		return aliasPattern{kind: KindMobile, exact: s}, nil
	}
}

// match reports whether the normalised alias a fits the pattern.
func (pt aliasPattern) match(a Alias) bool {
	if a.Kind != pt.kind || a.Value == "" {
		return false
	}
	switch {
	case pt.exact != "":
		return a.Value == pt.exact
	case pt.prefix != "":
		return strings.HasPrefix(a.Value, pt.prefix)
	}
	d := a.Value[strings.LastIndexByte(a.Value, '@')+1:]
	if pt.domain != "" {
		return d == pt.domain
	}
	return strings.HasSuffix(d, pt.sub)
}

// allowLine is one line of the allow list: a pattern and the roles it
// gives.
type allowLine struct {
	pattern aliasPattern
	roles   []string
}

// parseAllowFile reads allow_file lines: `PATTERN [ROLE...]`, blank lines
// and `#` comments (whole lines, or after a space) ignored.
func parseAllowFile(name string, data []byte) ([]allowLine, error) {
	var out []allowLine
	for i, line := range strings.Split(string(data), "\n") {
		if j := strings.Index(line, "#"); j == 0 || (j > 0 && (line[j-1] == ' ' || line[j-1] == '\t')) {
			line = line[:j]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pt, err := parsePattern(fields[0])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, i+1, err)
		}
		roles, err := normalizeRoles(fields[1:])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, i+1, err)
		}
		out = append(out, allowLine{pattern: pt, roles: roles})
	}
	return out, nil
}

// allowFilePoll is how often allow_file is read again. With the session
// recheck it bounds how long a removed line keeps working.
const allowFilePoll = time.Second

// accessControl is who may sign in and what roles they hold, as the
// configuration and the allow file say now.
type accessControl struct {
	// restricted is false when neither allow nor allow_file is set:
	// anyone may sign in (as register_new_users says).
	restricted bool
	static     []allowLine
	demo       []Alias
	file       string
	lines      atomic.Pointer[[]allowLine]
	sum        [32]byte // of the file's last good version
	// gen counts allow file changes; cached user states computed under
	// an older one are computed again.
	gen    atomic.Uint64
	logger *zap.Logger
	stop   chan struct{}
	done   chan struct{}
}

// provisionAccess builds the allow list; a broken allow_file fails here,
// naming the file and line.
func (p *Passwordless) provisionAccess() error {
	ac := &accessControl{restricted: len(p.Allow) > 0 || p.AllowFile != "", file: p.AllowFile, logger: p.logger}
	for _, s := range p.Allow {
		pt, err := parsePattern(s)
		if err != nil {
			return fmt.Errorf("allow: %v", err)
		}
		ac.static = append(ac.static, allowLine{pattern: pt})
	}
	for _, d := range p.DemoUsers {
		if a, err := parseAlias(d.Alias); err == nil {
			ac.demo = append(ac.demo, a)
		}
	}
	if ac.file != "" {
		data, err := os.ReadFile(ac.file)
		if err != nil {
			return fmt.Errorf("allow_file: %w", err)
		}
		lines, err := parseAllowFile(ac.file, data)
		if err != nil {
			return fmt.Errorf("allow_file: %w", err)
		}
		ac.lines.Store(&lines)
		ac.sum = sha256.Sum256(data)
		ac.stop, ac.done = make(chan struct{}), make(chan struct{})
		go ac.watch()
	}
	p.access = ac
	return nil
}

// watch reads the allow file again every allowFilePoll. A broken version
// is logged and the last good one stays.
func (ac *accessControl) watch() {
	defer close(ac.done)
	t := time.NewTicker(allowFilePoll)
	defer t.Stop()
	unreadable := false // logged once, not every poll
	for {
		select {
		case <-ac.stop:
			return
		case <-t.C:
		}
		data, err := os.ReadFile(ac.file)
		if err != nil {
			if !unreadable {
				ac.logger.Error("reading allow_file; keeping its last good version", zap.String("file", ac.file), zap.Error(err))
			}
			unreadable = true
			continue
		}
		unreadable = false
		sum := sha256.Sum256(data)
		if sum == ac.sum {
			continue
		}
		ac.sum = sum
		lines, err := parseAllowFile(ac.file, data)
		if err != nil {
			ac.logger.Error("allow_file is broken; keeping its last good version", zap.Error(err))
			continue
		}
		ac.lines.Store(&lines)
		ac.gen.Add(1)
		ac.logger.Info("allow_file reloaded", zap.String("file", ac.file), zap.Int("lines", len(lines)))
	}
}

func (ac *accessControl) close() {
	if ac != nil && ac.stop != nil {
		close(ac.stop)
		<-ac.done
	}
}

// each calls f for every allow line, the configured ones first.
func (ac *accessControl) each(f func(allowLine)) {
	for _, l := range ac.static {
		f(l)
	}
	if lines := ac.lines.Load(); lines != nil {
		for _, l := range *lines {
			f(l)
		}
	}
}

// admits reports whether a may sign in.
func (ac *accessControl) admits(a Alias) bool {
	if !ac.restricted || slices.Contains(ac.demo, a) {
		return true
	}
	ok := false
	ac.each(func(l allowLine) { ok = ok || l.pattern.match(a) })
	return ok
}

// admitsUser reports whether one of u's aliases may sign in.
func (ac *accessControl) admitsUser(u User) bool {
	return ac.admits(Alias{Kind: KindEmail, Value: u.Email}) && u.Email != "" ||
		ac.admits(Alias{Kind: KindMobile, Value: u.Mobile}) && u.Mobile != ""
}

// roles are u's effective roles: those stored, and those of every allow
// line that matches one of its aliases. Sorted.
func (ac *accessControl) roles(u User) []string {
	out := slices.Clone(u.Roles)
	email, mobile := Alias{Kind: KindEmail, Value: u.Email}, Alias{Kind: KindMobile, Value: u.Mobile}
	ac.each(func(l allowLine) {
		if len(l.roles) > 0 && (l.pattern.match(email) || l.pattern.match(mobile)) {
			out = append(out, l.roles...)
		}
	})
	slices.Sort(out)
	return slices.Compact(out)
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

// Rules on who may open which paths.

// ProtectRule protects paths and says who may open them: a signed-in user
// who holds one of Roles, or whose email or mobile number matches one of
// Emails or Mobiles. A rule with none of these admits any signed-in user.
type ProtectRule struct {
	// Paths (Caddy path matcher syntax) the rule covers.
	Paths []string `json:"paths"`
	// Roles any one of which admits a user.
	Roles []string `json:"roles,omitempty"`
	// Email patterns (`alice@example.com`, `*@example.com`,
	// `*@*.example.com`) that admit a user whose address matches.
	Emails []string `json:"emails,omitempty"`
	// Mobile patterns (`+15551234567`, `+44*`) that admit a user whose
	// number matches.
	Mobiles []string `json:"mobiles,omitempty"`

	match    caddyhttp.MatchPath
	patterns []aliasPattern
}

func (pr *ProtectRule) provision(ctx caddy.Context) error {
	if len(pr.Paths) == 0 {
		return errors.New("a rule needs paths")
	}
	pr.match = caddyhttp.MatchPath(pr.Paths)
	if err := pr.match.Provision(ctx); err != nil {
		return err
	}
	roles, err := normalizeRoles(pr.Roles)
	if err != nil {
		return err
	}
	pr.Roles = roles
	for kind, list := range map[AliasKind][]string{KindEmail: pr.Emails, KindMobile: pr.Mobiles} {
		for _, s := range list {
			pt, err := parsePattern(s)
			if err != nil {
				return err
			}
			if pt.kind != kind {
				return fmt.Errorf("%q is not a pattern of %s", s, map[AliasKind]string{KindEmail: "email addresses", KindMobile: "mobile numbers"}[kind])
			}
			pr.patterns = append(pr.patterns, pt)
		}
	}
	return nil
}

// conditional reports whether the rule admits only some users.
func (pr *ProtectRule) conditional() bool {
	return len(pr.Roles) > 0 || len(pr.patterns) > 0
}

// permits reports whether the rule lets the user of st in.
func (pr *ProtectRule) permits(st *userState) bool {
	if !pr.conditional() {
		return true
	}
	for _, r := range pr.Roles {
		if _, ok := slices.BinarySearch(st.roles, r); ok {
			return true
		}
	}
	for _, pt := range pr.patterns {
		if pt.match(Alias{Kind: KindEmail, Value: st.email}) || pt.match(Alias{Kind: KindMobile, Value: st.mobile}) {
			return true
		}
	}
	return false
}

// ruleFor returns the first rule, in configuration order, whose paths
// match r; nil if none does.
func (p *Passwordless) ruleFor(r *http.Request) *ProtectRule {
	for i := range p.ProtectRules {
		if p.ProtectRules[i].match.Match(r) {
			return &p.ProtectRules[i]
		}
	}
	return nil
}

// anyRuleAnyReading reports whether a rule covers some reading of r's path.
func (p *Passwordless) anyRuleAnyReading(r *http.Request, readings []string) bool {
	for i := range p.ProtectRules {
		if matchAnyReading(p.ProtectRules[i].match, r, readings) {
			return true
		}
	}
	return false
}

// permitted reports whether the rules let the user of st open r. Under
// every reading of the path the first matching rule decides, and every
// such decision must admit the user: otherwise /docs/..;/admin could be
// judged by the rule of /docs/* while a servlet backend serves /admin.
func (p *Passwordless) permitted(r *http.Request, st *userState) bool {
	if len(p.ProtectRules) == 0 {
		return true
	}
	readings := pathReadings(r)
	if readings == nil {
		rule := p.ruleFor(r)
		return rule == nil || rule.permits(st)
	}
	for _, path := range readings {
		if rule := p.ruleFor(withPath(r, path)); rule != nil && !rule.permits(st) {
			return false
		}
	}
	return true
}

// unmarshalProtect reads `protect PATHS [{ role ...; email ...; mobile ... }]`.
func unmarshalProtect(d *caddyfile.Dispenser) (ProtectRule, error) {
	rule := ProtectRule{Paths: d.RemainingArgs()}
	if len(rule.Paths) == 0 {
		return rule, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		kind := d.Val()
		args := d.RemainingArgs()
		if len(args) == 0 {
			return rule, d.ArgErr()
		}
		switch kind {
		case "role":
			if _, err := normalizeRoles(args); err != nil {
				return rule, d.Errf("role: %v", err)
			}
			rule.Roles = append(rule.Roles, args...)
		case "email", "mobile":
			for _, a := range args {
				pt, err := parsePattern(a)
				if err != nil {
					return rule, d.Errf("%s: %v", kind, err)
				}
				if string(pt.kind) != kind {
					return rule, d.Errf("%s: %q is a pattern of the other kind", kind, a)
				}
			}
			if kind == "email" {
				rule.Emails = append(rule.Emails, args...)
			} else {
				rule.Mobiles = append(rule.Mobiles, args...)
			}
		default:
			return rule, d.Errf("unrecognized protect subdirective %q (role, email or mobile)", kind)
		}
	}
	return rule, nil
}

// protectConfig turns the protect lines of a Caddyfile into the JSON
// fields: plain paths when no line has conditions, as before rules
// existed; else every line a rule, in order, since the first match decides.
func protectConfig(lines []ProtectRule) ([]string, []ProtectRule) {
	if !slices.ContainsFunc(lines, func(r ProtectRule) bool {
		return len(r.Roles) > 0 || len(r.Emails) > 0 || len(r.Mobiles) > 0
	}) {
		var paths []string
		for _, r := range lines {
			paths = append(paths, r.Paths...)
		}
		return paths, nil
	}
	return nil, lines
}

// forbiddenError is DRF's answer to a signed-in user without permission.
var forbiddenError = &apiError{status: http.StatusForbidden, detail: "You do not have permission to perform this action."}

var forbiddenPage = template.Must(template.New("forbidden").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Not permitted</title>
<style nonce="{{.Nonce}}">body{font:16px/1.5 system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;color:#222}button{font:inherit;padding:.5rem 1rem}</style>
</head><body>
<h1>Not permitted</h1>
<p>You are signed in as <strong>{{.Who}}</strong>, which may not open this page.</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="next" value="{{.Next}}">
<button type="submit">Sign out and sign in as someone else</button>
</form>
</body></html>
`))

// forbidden answers a signed-in user whom the rule does not admit: 403
// JSON, or for a browser navigation a page that offers to sign out.
func (p *Passwordless) forbidden(w http.ResponseWriter, r *http.Request, st *userState) {
	if !wantsLoginPage(r) || len(p.senders) == 0 {
		writeError(w, forbiddenError)
		return
	}
	nonce, err := randomID()
	if err != nil {
		writeError(w, p.internal("generating nonce", err))
		return
	}
	who := st.email
	if who == "" {
		who = st.mobile
	}
	action, next := p.signOutForm(r)
	var b bytes.Buffer
	if err := forbiddenPage.Execute(&b, map[string]string{"Nonce": nonce, "Who": who, "Action": action, "Next": next}); err != nil {
		writeError(w, p.internal("rendering forbidden page", err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; form-action "+formAction(action)+"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	w.Write(b.Bytes())
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
