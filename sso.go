package passwordless

import (
	"strconv"

	"errors"
	"fmt"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
)

// Single sign-on across the hosts of one domain: the sign-in lives on one
// host (login_url), the session cookie is sent to every host of the
// domain (cookie_domain), and an absolute `next` may lead back to the
// hosts the operator named (return_hosts), to no other.

// A hostPattern is a host (`app.example.com`) or every subdomain of a
// domain (`*.example.com`, not example.com itself).
type hostPattern struct {
	exact  string
	suffix string // ".example.com" for *.example.com
}

// checkDomainName refuses what is not a DNS name of at least two labels:
// a scheme, port, path, IP address, wildcard or a single label such as
// `com` (a cookie for a whole top-level domain).
func checkDomainName(s string) error {
	switch {
	case s == "":
		return errors.New("a host name is empty")
	case strings.Contains(s, "://"):
		return fmt.Errorf("%q: give a host name, without a scheme", s)
	case strings.ContainsAny(s, "/?#@"):
		return fmt.Errorf("%q: give a host name, without a path", s)
	case strings.Contains(s, ":"):
		return fmt.Errorf("%q: give a host name, without a port (ports are not compared)", s)
	case net.ParseIP(s) != nil:
		return fmt.Errorf("%q: give a host name, not an IP address", s)
	case strings.Contains(s, "*"):
		return fmt.Errorf("%q: a wildcard may only be the first label, as in *.example.com", s)
	case !strings.Contains(s, "."):
		return fmt.Errorf("%q: a host name needs at least two labels, such as example.com", s)
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a host name", s)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%q is not a host name", s)
			}
		}
	}
	return nil
}

func parseHostPattern(s string) (hostPattern, error) {
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		if err := checkDomainName(rest); err != nil {
			return hostPattern{}, err
		}
		return hostPattern{suffix: "." + strings.ToLower(rest)}, nil
	}
	if err := checkDomainName(s); err != nil {
		return hostPattern{}, err
	}
	return hostPattern{exact: strings.ToLower(s)}, nil
}

// bareHost is a Host header's name, lowercase, without port or brackets.
func bareHost(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
}

// returnHosts are the hosts an absolute `next` and the sign-in redirect
// may name.
type returnHosts []hostPattern

func (l returnHosts) allows(hostport string) bool {
	h := bareHost(hostport)
	if h == "" || !plainHostPort(hostport) {
		return false
	}
	for _, pt := range l {
		if pt.exact != "" && h == pt.exact || pt.suffix != "" && strings.HasSuffix(h, pt.suffix) {
			return true
		}
	}
	return false
}

// plainHostPort reports whether hostport is a host name of ASCII letters,
// digits, hyphens and dots, with a port of digits or none. A browser reads
// such a host as it is written. Any other character it maps or refuses
// (a fullwidth solidus becomes a slash, so the host is not what the
// suffix check saw), so such a host is none of the list's.
func plainHostPort(hostport string) bool {
	host, port, hasPort := strings.Cut(hostport, ":")
	if host == "" || hasPort && strings.Trim(port, "0123456789") != "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// checkLoginURL refuses a login_url that is not an absolute http(s) URL,
// or that carries a user name or password.
func checkLoginURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("login_url must be an absolute http or https URL such as https://auth.example.com/auth/login, not %q", s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("login_url %q must not carry a user name or password", s)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("login_url %q must not have a fragment", s)
	}
	return u, nil
}

// checkLoginInDomain refuses a login_url whose host would not receive the
// cookie it sets.
func checkLoginInDomain(login *url.URL, domain string) error {
	h := bareHost(login.Host)
	if domain != "" && h != domain && !strings.HasSuffix(h, "."+domain) {
		return fmt.Errorf("login_url %s is outside cookie_domain %s: the cookie set at sign-in would not reach it", login, domain)
	}
	return nil
}

// errAssertionHS256 refuses assertions that only the holders of the
// secret, who could forge them, could verify.
var errAssertionHS256 = errors.New("assertion needs a public key to be verified with (EdDSA, ES256 or RS256): with HS256 every verifier could forge it")

// provisionSSO checks login_url, cookie_domain, return_hosts and
// assertion, and builds the list of hosts to return to.
func (p *Passwordless) provisionSSO(env func(*string)) error {
	env(&p.LoginURL)
	env(&p.CookieDomain)
	for i := range p.ReturnHosts {
		env(&p.ReturnHosts[i])
	}
	if p.CookieDomain != "" {
		if err := checkDomainName(p.CookieDomain); err != nil {
			return fmt.Errorf("cookie_domain: %w", err)
		}
		p.CookieDomain = strings.ToLower(p.CookieDomain)
	}
	p.returnHosts = nil
	if p.ReturnHosts == nil && p.CookieDomain != "" {
		p.returnHosts = returnHosts{{exact: p.CookieDomain}, {suffix: "." + p.CookieDomain}}
	}
	for _, s := range p.ReturnHosts {
		pt, err := parseHostPattern(s)
		if err != nil {
			return fmt.Errorf("return_hosts: %w", err)
		}
		p.returnHosts = append(p.returnHosts, pt)
	}
	p.loginURL = nil
	if p.LoginURL != "" {
		u, err := checkLoginURL(p.LoginURL)
		if err != nil {
			return err
		}
		if err := checkLoginInDomain(u, p.CookieDomain); err != nil {
			return err
		}
		p.loginURL = u
		p.returnHosts = append(p.returnHosts, hostPattern{exact: bareHost(u.Host)})
	}
	if p.Assertion && p.JWT.Algorithm == "HS256" {
		return errAssertionHS256
	}
	return nil
}

// isHTTPS reports whether the request came over HTTPS. A request /check
// describes carries a stand-in TLS state when its proxy says it did.
func isHTTPS(r *http.Request) bool { return r.TLS != nil }

// absoluteURL is the URL the client asked for.
func absoluteURL(r *http.Request) string {
	scheme := "http"
	if isHTTPS(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.RequestURI()
}

// signInURL is where a request refused for reason goes, if it is a
// browser navigation: login_url with r's absolute URL as `next` when r's
// host may be returned to, else, with local set, this block's own sign-in
// page with r's path. A cookie sent cross-site gets its 403, never a page.
func (p *Passwordless) signInURL(r *http.Request, reason string, local bool) (string, bool) {
	if reason == reasonCrossSite || !wantsLoginPage(r) {
		return "", false
	}
	if p.viaLoginURL(r) {
		return p.signInPage(absoluteURL(r)), true
	}
	if local && len(p.senders) > 0 {
		return p.Prefix + "/login?next=" + url.QueryEscape(r.URL.RequestURI()), true
	}
	return "", false
}

// viaLoginURL reports whether r's sign-in is login_url's: r's host is one
// it may return to.
func (p *Passwordless) viaLoginURL(r *http.Request) bool {
	return p.loginURL != nil && p.returnHosts.allows(r.Host)
}

// signInPage is the sign-in page, login_url or this block's, leading on
// to next.
func (p *Passwordless) signInPage(next string) string {
	if p.loginURL == nil {
		return p.Prefix + "/login?next=" + url.QueryEscape(next)
	}
	u := *p.loginURL
	q := u.Query()
	q.Set("next", next)
	u.RawQuery = q.Encode()
	return u.String()
}

// signOutForm is where the 403 page's sign-out button posts, and the
// `next` it carries: the sign-in host's logout and r's absolute URL when
// r's host may be returned to, else this block's logout and r's path.
func (p *Passwordless) signOutForm(r *http.Request) (action, next string) {
	if p.viaLoginURL(r) {
		u := *p.loginURL
		u.RawQuery, u.Path, u.RawPath = "", p.Prefix+"/logout", ""
		if base, ok := strings.CutSuffix(p.loginURL.Path, "/login"); ok {
			u.Path = base + "/logout"
		}
		return u.String(), absoluteURL(r)
	}
	return p.Prefix + "/logout", safePath(r.URL.RequestURI())
}

// safeNext keeps a redirect target on this site or an allowed host: a
// path, or an absolute URL on a host of return_hosts (https when r came
// over https). Anything else, such as https://evil.example,
// //evil.example or /\evil.example, becomes /. http.Redirect cleans the
// path it is given, so the cleaned form is what is checked and returned;
// browsers read a backslash as a slash, so none is allowed anywhere.
func (p *Passwordless) safeNext(r *http.Request, next string) string {
	if next == "" || strings.ContainsAny(next, "\\\r\n\t\x00") {
		return "/"
	}
	if next[0] == '/' {
		return safePath(next)
	}
	u, err := url.Parse(next)
	if err != nil || u.Host == "" || u.User != nil || u.Opaque != "" || !p.returnHosts.allows(u.Host) ||
		!(u.Scheme == "https" || u.Scheme == "http" && !isHTTPS(r)) {
		return "/"
	}
	rest := u.EscapedPath()
	if rest == "" {
		rest = "/"
	}
	if u.RawQuery != "" {
		rest += "?" + u.RawQuery
	}
	return u.Scheme + "://" + strings.ToLower(u.Host) + safePath(rest)
}

// safePath is next if it is a path of this site, else /.
func safePath(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" ||
		strings.Contains(u.Path, "\\") {
		return "/"
	}
	clean := path.Clean(u.Path)
	if strings.HasSuffix(u.Path, "/") && clean != "/" {
		clean += "/"
	}
	if !strings.HasPrefix(clean, "/") || strings.HasPrefix(clean, "//") {
		return "/"
	}
	u.Path, u.RawPath, u.RawQuery = clean, "", escapeQuery(u.RawQuery)
	out := u.String()
	if !strings.HasPrefix(out, "/") || strings.HasPrefix(out, "//") || strings.Contains(out, "\\") {
		return "/"
	}
	return out
}

// escapeQuery percent-encodes the bytes of a raw query that may not stand
// in a URL as they are (spaces, controls, quotes, angle brackets, anything
// not ASCII), as a browser would before sending it: the target goes into a
// Location header and a page, and stays one printable token there. What
// is already escaped, and the separators, are kept.
func escapeQuery(q string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c > ' ' && c < 0x7f && !strings.ContainsRune("\"<>\\^`{|}", rune(c)) {
			if b.Len() > 0 {
				b.WriteByte(c)
			}
			continue
		}
		if b.Len() == 0 {
			b.WriteString(q[:i])
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	if b.Len() == 0 {
		return q
	}
	return b.String()
}

// formAction is the CSP form-action of a page whose form leads to next:
// 'self', and next's origin when it is on another host, since browsers
// apply form-action to the redirect after the POST too.
func formAction(next string) string {
	if strings.HasPrefix(next, "/") {
		return "'self'"
	}
	u, err := url.Parse(next)
	if err != nil || u.Host == "" {
		return "'self'"
	}
	return "'self' " + u.Scheme + "://" + u.Host
}

// fromAllowedPage reports whether a browser request comes from a page of
// this site or of a host of return_hosts (sign-out buttons of the apps).
func (p *Passwordless) fromAllowedPage(r *http.Request) bool {
	if sameOrigin(r) {
		return true
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return false
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && (u.Scheme == "https" || !isHTTPS(r)) && p.returnHosts.allows(u.Host)
}

// ssoPlaces are where options that are checked against each other were
// given in a Caddyfile, for the error.
type ssoPlaces struct{ login, assertion string }

// unmarshalSSO reads login_url, cookie_domain, return_hosts or assertion.
// A value with a placeholder is checked once it is resolved, at provision.
func (p *Passwordless) unmarshalSSO(d *caddyfile.Dispenser, at *ssoPlaces) error {
	switch d.Val() {
	case "login_url":
		at.login = where(d)
		if err := oneArg(d, &p.LoginURL); err != nil {
			return err
		}
		if _, err := checkLoginURL(p.LoginURL); err != nil && !hasPlaceholder(p.LoginURL) {
			return d.WrapErr(err)
		}
	case "cookie_domain":
		if err := oneArg(d, &p.CookieDomain); err != nil {
			return err
		}
		if err := checkDomainName(p.CookieDomain); err != nil && !hasPlaceholder(p.CookieDomain) {
			return d.Errf("cookie_domain: %v", err)
		}
	case "return_hosts":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		for _, a := range args {
			if _, err := parseHostPattern(a); err != nil && !hasPlaceholder(a) {
				return d.Errf("return_hosts: %v", err)
			}
		}
		p.ReturnHosts = append(p.ReturnHosts, args...)
	case "assertion":
		at.assertion = where(d)
		if d.NextArg() {
			return d.ArgErr()
		}
		p.Assertion = true
	}
	return nil
}

// checkSSO checks the options that depend on each other once the whole
// block is read, naming the line of the one at fault.
func (p *Passwordless) checkSSO(at ssoPlaces) error {
	if u, err := checkLoginURL(p.LoginURL); err == nil && !hasPlaceholder(p.CookieDomain) {
		if err := checkLoginInDomain(u, strings.ToLower(p.CookieDomain)); err != nil {
			return fmt.Errorf("%w, at %s", err, at.login)
		}
	}
	if p.Assertion && p.JWT != nil && p.JWT.Algorithm == "HS256" {
		return fmt.Errorf("%w, at %s", errAssertionHS256, at.assertion)
	}
	return nil
}

// where names the current token's place as Caddyfile errors do.
func where(d *caddyfile.Dispenser) string {
	return d.File() + ":" + strconv.Itoa(d.Line())
}

// hasPlaceholder reports whether s is resolved only at provision, such as
// {env.LOGIN_URL}.
func hasPlaceholder(s string) bool { return strings.Contains(s, "{") }
