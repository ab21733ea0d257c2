package passwordless

import (
	"errors"
	"net/mail"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Aliases are normalised before anything is stored, looked up or limited,
// so that Aaron@Example.com and aaron@example.com are one user, one code
// and one rate limit.

const maxEmailLen = 254 // RFC 5321 path limit

var (
	errInvalidEmail  = errors.New("Enter a valid email address.")
	errInvalidMobile = errors.New("Enter a valid mobile number in E.164 form, such as +15551234567.")
)

// domainLabel is one DNS label; internationalised domains must arrive in
// their ASCII (punycode) form.
var domainLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// normalizeEmail checks an address the way a mail header needs it (no
// display name, no comments, no CR/LF) and lower-cases it.
func normalizeEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > maxEmailLen || !utf8.ValidString(s) || strings.ContainsAny(s, "\x00\r\n\t ") {
		return "", errInvalidEmail
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", errInvalidEmail
	}
	s = strings.ToLower(s)
	at := strings.LastIndexByte(s, '@')
	local, domain := s[:at], s[at+1:]
	if local == "" || len(local) > 64 || strings.HasPrefix(local, "\"") {
		return "", errInvalidEmail
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return "", errInvalidEmail
	}
	for _, l := range labels {
		if !domainLabel.MatchString(l) {
			return "", errInvalidEmail
		}
	}
	return s, nil
}

var e164 = regexp.MustCompile(`^\+[1-9]\d{1,14}$`)

// normalizeMobile accepts E.164 only; spaces, dashes and dots that people
// type between digit groups are dropped first.
func normalizeMobile(s string) (string, error) {
	// A '+' sent unencoded in a form body (curl -d mobile=+1555...) arrives
	// as a space; a number cannot start with a space otherwise.
	if len(s) > 1 && s[0] == ' ' && s[1] >= '1' && s[1] <= '9' {
		s = "+" + s[1:]
	}
	s = strings.TrimSpace(s)
	if len(s) > 32 {
		return "", errInvalidMobile
	}
	s = strings.NewReplacer(" ", "", "-", "", ".", "", "(", "", ")", "").Replace(s)
	if !e164.MatchString(s) {
		return "", errInvalidMobile
	}
	return s, nil
}

// parseAlias reads a configured alias: an email address or an E.164 number.
func parseAlias(s string) (Alias, error) {
	if strings.Contains(s, "@") {
		v, err := normalizeEmail(s)
		return Alias{Kind: KindEmail, Value: v}, err
	}
	v, err := normalizeMobile(s)
	return Alias{Kind: KindMobile, Value: v}, err
}

// isDigits reports whether s is exactly n ASCII digits.
func isDigits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// mailbox is the inbox a reaches, for the per_alias limit only: a `+tag`
// is dropped, and at Gmail the dots too, since they all deliver to one
// inbox. Otherwise one inbox could be flooded, or one person's SMS-free
// budget multiplied, by spelling it many ways. The alias itself is kept as
// typed everywhere else.
func mailbox(a Alias) string {
	if a.Kind != KindEmail {
		return a.Key()
	}
	local, domain, ok := strings.Cut(a.Value, "@")
	if !ok {
		return a.Key()
	}
	local, _, _ = strings.Cut(local, "+")
	if domain == "gmail.com" || domain == "googlemail.com" {
		local, domain = strings.ReplaceAll(local, ".", ""), "gmail.com"
	}
	return string(KindEmail) + ":" + local + "@" + domain
}
