package passwordless

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// isPreflight reports whether r is a CORS preflight, which browsers send
// without credentials. Only a real one passes without a token: an OPTIONS
// request with a body, or without the preflight headers, is authenticated
// like any other, so it cannot carry data past the check.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.ContentLength == 0 && len(r.TransferEncoding) == 0 &&
		r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

// protects reports whether r needs a token: protect or a rule covers it
// and public does not. Backends do not all read a path alike (servlet
// containers cut ";params" and some servers take '\' for '/'), so a
// request is protected if any reading of its path is, and public only if
// every reading is.
func (p *Passwordless) protects(r *http.Request) bool {
	readings := pathReadings(r)
	if readings == nil {
		// The common path has one reading; the default, everything, needs
		// no matching.
		if !p.protectAll && !p.protect.Match(r) && p.ruleFor(r) == nil {
			return false
		}
		return len(p.public) == 0 || !p.public.Match(r)
	}
	if !p.protectAll && !matchAnyReading(p.protect, r, readings) && !p.anyRuleAnyReading(r, readings) {
		return false
	}
	return len(p.public) == 0 || !matchEveryReading(p.public, r, readings)
}

// pathReadings lists the ways a backend may read r's path: as decoded, as
// sent, with ";params" cut from each segment, with '\' as '/', and both.
// It is nil when the path has only the one reading, as nearly all do.
func pathReadings(r *http.Request) []string {
	decoded, raw := r.URL.Path, r.URL.EscapedPath()
	if !strings.ContainsAny(decoded, ";\\") && !strings.Contains(raw, "%") {
		return nil
	}
	var out []string
	add := func(s string) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, base := range []string{decoded, raw} {
		cut := cutPathParams(base)
		add(base)
		add(cut)
		add(strings.ReplaceAll(base, "\\", "/"))
		add(strings.ReplaceAll(cut, "\\", "/"))
	}
	return out
}

// cutPathParams removes ";params" from each segment, as servlet containers
// do: /static/..;/secret is /static/../secret to them.
func cutPathParams(p string) string {
	if !strings.Contains(p, ";") {
		return p
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	return strings.Join(segs, "/")
}

// withPath is r as if its path were path, for matching.
func withPath(r *http.Request, path string) *http.Request {
	r2 := *r
	u := *r.URL
	u.Path, u.RawPath = path, ""
	r2.URL = &u
	return &r2
}

func matchAnyReading(m caddyhttp.MatchPath, r *http.Request, readings []string) bool {
	for _, path := range readings {
		if m.Match(withPath(r, path)) {
			return true
		}
	}
	return false
}

func matchEveryReading(m caddyhttp.MatchPath, r *http.Request, readings []string) bool {
	for _, path := range readings {
		if !m.Match(withPath(r, path)) {
			return false
		}
	}
	return true
}

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
	var err error
	if pr.match, err = pathMatcher(ctx, pr.Paths); err != nil {
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

// forbidden answers a signed-in user whom the rule does not admit: 403
// JSON, or for a browser navigation a page that offers to sign out.
func (p *Passwordless) forbidden(w http.ResponseWriter, r *http.Request, st *userState) {
	if !wantsLoginPage(r) || len(p.senders) == 0 {
		writeError(w, p.pages.localize(r, forbiddenError))
		return
	}
	v := p.pages.view(r)
	v.Who = st.email
	if v.Who == "" {
		v.Who = st.mobile
	}
	v.Action, v.Next = p.signOutForm(r)
	if err := p.pages.render(w, http.StatusForbidden, "forbidden", v, "form-action "+formAction(v.Action)+"; "); err != nil {
		writeError(w, p.internal("rendering forbidden page", err))
	}
}

// provisionProtect sets up the matchers of protect, public and the rules.
func (p *Passwordless) provisionProtect(ctx caddy.Context) error {
	if len(p.Protect) == 0 && len(p.ProtectRules) == 0 {
		p.Protect = []string{"/*"}
	}
	for i := range p.ProtectRules {
		if err := p.ProtectRules[i].provision(ctx); err != nil {
			return fmt.Errorf("protect %s: %w", strings.Join(p.ProtectRules[i].Paths, " "), err)
		}
	}
	p.protectAll = len(p.Protect) == 1 && p.Protect[0] == "/*"
	var err error
	if p.protect, err = pathMatcher(ctx, p.Protect); err != nil {
		return fmt.Errorf("protect: %w", err)
	}
	if p.public, err = pathMatcher(ctx, p.Public); err != nil {
		return fmt.Errorf("public: %w", err)
	}
	return nil
}

// pathMatcher matches paths as Caddy's path matcher does, but a path
// `/x/*` also covers `/x` itself. In Caddy `/admin/*` does not match
// `/admin`, and neither does it match `/ADMIN`, `/admin/.` or
// `/admin/x/..`, which are cleaned to it: `protect /admin/* { role admin }`
// would leave the admin page itself to any signed-in user.
func pathMatcher(ctx caddy.Context, paths []string) (caddyhttp.MatchPath, error) {
	m := slices.Clone(paths)
	for _, p := range paths {
		if dir, ok := strings.CutSuffix(p, "/*"); ok && dir != "" && !slices.Contains(m, dir) {
			m = append(m, dir)
		}
	}
	if len(m) == 0 {
		m = nil
	}
	mp := caddyhttp.MatchPath(m)
	return mp, mp.Provision(ctx)
}
