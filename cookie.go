package passwordless

import (
	"net/http"
	"strings"
	"time"
)

// Session cookie names. On HTTPS the __Host- prefix makes browsers insist
// on Secure, Path=/ and no Domain, so no subdomain can plant or read it.
// A cookie for a whole domain cannot have that prefix: __Secure- still
// makes browsers insist on Secure, so no plain-HTTP page can plant it.
const (
	cookieName       = "pwl_session"
	secureCookieName = "__Host-pwl_session"
	domainCookieName = "__Secure-pwl_session"
)

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
		if l := withoutSessionCookies(line); l != line {
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
