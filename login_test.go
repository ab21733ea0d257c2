package passwordless

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// These follow drfpasswordless's own email authentication tests, then go
// past them.

func TestEmailSignupSuccess(t *testing.T) {
	e := newEnv(t)
	r := e.postForm("/auth/email/", map[string]string{"email": "aaron@example.com"})
	expectStatus(t, r, http.StatusOK)
	if r.str("detail") == "" {
		t.Fatalf("no detail in %s", r.body)
	}
	m := e.smtp.last(t, "aaron@example.com")
	if !strings.Contains(m.Header.Get("From"), "login@example.com") || m.Header.Get("Subject") != "Your login code" {
		t.Errorf("headers: From %q Subject %q", m.Header.Get("From"), m.Header.Get("Subject"))
	}
	code := e.smtp.code(t, "aaron@example.com")
	if len(code) != 6 {
		t.Fatalf("code %q is not 6 digits", code)
	}

	r = e.postForm("/auth/token/", map[string]string{"email": "aaron@example.com", "token": code})
	expectStatus(t, r, http.StatusOK)
	if r.str("token") == "" || r.str("refresh_token") == "" || r.str("token_type") != "Bearer" {
		t.Fatalf("token response: %s", r.body)
	}
	if exp, _ := r.json["expires_in"].(float64); exp != 900 {
		t.Errorf("expires_in = %v, want 900", r.json["expires_in"])
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("token response may be cached: Cache-Control %q", r.header.Get("Cache-Control"))
	}

	me := e.get("/auth/me", bearer(r.str("token"))...)
	expectStatus(t, me, http.StatusOK)
	if me.str("email") != "aaron@example.com" || me.json["email_verified"] != true || me.json["mobile"] != nil {
		t.Fatalf("/me: %s", me.body)
	}
}

func TestJSONBodyAndNoTrailingSlash(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postJSON("/auth/email", map[string]any{"email": "json@example.com", "mobile": nil}), http.StatusOK)
	code := e.smtp.code(t, "json@example.com")
	r := e.postJSON("/auth/token", map[string]string{"email": "json@example.com", "token": code})
	expectStatus(t, r, http.StatusOK)
}

func TestEmailInvalid(t *testing.T) {
	e := newEnv(t)
	for _, bad := range []string{"", "notanemail", "a@b", "Aaron <a@example.com>", "a@example.com\r\nBcc: x@evil.com",
		"a@exa mple.com", strings.Repeat("a", 250) + "@example.com", "a@-example.com"} {
		r := e.postForm("/auth/email/", map[string]string{"email": bad})
		expectStatus(t, r, http.StatusBadRequest)
		if r.str("detail") == "" {
			t.Errorf("%q: no detail in %s", bad, r.body)
		}
		if msgs, _ := r.json["email"].([]any); len(msgs) != 1 {
			t.Errorf("%q: no field error in %s", bad, r.body)
		}
	}
	if n := len(e.smtp.all()); n != 0 {
		t.Fatalf("%d messages sent for invalid addresses", n)
	}
}

func TestWrongCode(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "wrong@example.com"}), http.StatusOK)
	code := e.smtp.code(t, "wrong@example.com")
	wrong := "123456"
	if code == wrong {
		wrong = "654321"
	}
	r := e.postForm("/auth/token/", map[string]string{"email": "wrong@example.com", "token": wrong})
	expectStatus(t, r, http.StatusBadRequest)
	if r.str("detail") == "" || r.str("token") != "" {
		t.Fatalf("body: %s", r.body)
	}
	// The right code still works after one wrong guess.
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "wrong@example.com", "token": code}), http.StatusOK)
}

func TestMissingAlias(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"token": "123456"}), http.StatusBadRequest)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{}), http.StatusBadRequest)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "a@example.com"}), http.StatusBadRequest)
}

func TestOtherAliasCode(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "one@example.com"}), http.StatusOK)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "two@example.com"}), http.StatusOK)
	code := e.smtp.code(t, "one@example.com")
	r := e.postForm("/auth/token/", map[string]string{"email": "two@example.com", "token": code})
	expectStatus(t, r, http.StatusBadRequest)
}

func TestSecondCodeInvalidatesFirst(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "twice@example.com"}), http.StatusOK)
	first := e.smtp.code(t, "twice@example.com")
	clock.Advance(time.Minute) // past send_interval
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "twice@example.com"}), http.StatusOK)
	second := e.smtp.code(t, "twice@example.com")
	if first != second {
		expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "twice@example.com", "token": first}), http.StatusBadRequest)
	}
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "twice@example.com", "token": second}), http.StatusOK)
}

func TestCodeSingleUse(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "once@example.com"}), http.StatusOK)
	code := e.smtp.code(t, "once@example.com")
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "once@example.com", "token": code}), http.StatusOK)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "once@example.com", "token": code}), http.StatusBadRequest)
}

func TestCodeExpires(t *testing.T) {
	e := newEnv(t, withConfig("code_ttl 2m"))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "late@example.com"}), http.StatusOK)
	code := e.smtp.code(t, "late@example.com")
	clock.Advance(2*time.Minute + time.Second)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "late@example.com", "token": code}), http.StatusBadRequest)
}

func TestCodeBurnedAfterMaxAttempts(t *testing.T) {
	e := newEnv(t, withConfig("max_attempts 3"))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "burn@example.com"}), http.StatusOK)
	code := e.smtp.code(t, "burn@example.com")
	guesses := 0
	for g := 0; guesses < 3; g++ {
		wrong := strings.Repeat(string(rune('0'+g)), 6)
		if wrong == code {
			continue
		}
		expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "burn@example.com", "token": wrong}), http.StatusBadRequest)
		guesses++
	}
	// The third wrong guess killed the code: the right one is now refused.
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "burn@example.com", "token": code}), http.StatusBadRequest)
}

func TestEmailCaseInsensitive(t *testing.T) {
	e := newEnv(t)
	first := e.login("Aaron@Example.com")
	clock.Advance(time.Minute) // past send_interval
	second := e.login("aaron@example.com")
	a := e.get("/auth/me", bearer(first.str("token"))...)
	b := e.get("/auth/me", bearer(second.str("token"))...)
	if a.str("id") == "" || a.str("id") != b.str("id") {
		t.Fatalf("two users for one address: %s / %s", a.body, b.body)
	}
}

func TestRegisterOff(t *testing.T) {
	e := newEnv(t, withConfig("register_new_users false"))
	known := e.postForm("/auth/email/", map[string]string{"email": "nobody@example.com"})
	expectStatus(t, known, http.StatusOK)
	e.drain()
	if n := len(e.smtp.all()); n != 0 {
		t.Fatalf("%d messages sent to an unknown address", n)
	}
	for _, code := range []string{"000000", "123456"} {
		expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "nobody@example.com", "token": code}), http.StatusBadRequest)
	}
}

func TestConcurrentExchangeOneWins(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "race@example.com"}), http.StatusOK)
	code := e.smtp.code(t, "race@example.com")
	const n = 16
	statuses := concurrently(n, func(int) int {
		return e.postForm("/auth/token/", map[string]string{"email": "race@example.com", "token": code}).status
	})
	ok := 0
	for _, s := range statuses {
		switch s {
		case http.StatusOK:
			ok++
		case http.StatusBadRequest, http.StatusTooManyRequests: // losers count as failures
		default:
			t.Errorf("unexpected status %d", s)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent exchanges succeeded, want exactly 1 (%v)", ok, n, statuses)
	}
}

func TestSMTPAuth(t *testing.T) {
	srv := startSMTP(t)
	srv.user, srv.pass = "mailer", "s3cret-pass"
	t.Setenv("PWL_TEST_SMTP_PASSWORD", "s3cret-pass")
	e := newEnv(t, withEmail(`email {
		from login@example.com
		subject "Sign in to Example"
		smtp `+srv.tlsAddr+` {
			username mailer
			password {env.PWL_TEST_SMTP_PASSWORD}
		}
	}`))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "auth@example.com"}), http.StatusOK)
	m := srv.last(t, "auth@example.com")
	if m.Header.Get("Subject") != "Sign in to Example" {
		t.Errorf("subject %q", m.Header.Get("Subject"))
	}
	srv.code(t, "auth@example.com")
}

func TestSMTPImplicitTLS(t *testing.T) {
	srv := startSMTP(t, true)
	e := newEnv(t, withEmail(`email {
		from login@example.com
		smtp `+srv.tlsAddr+` {
			tls implicit
		}
	}`))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "tls@example.com"}), http.StatusOK)
	srv.code(t, "tls@example.com")
}

func TestSMTPStartTLSRequired(t *testing.T) {
	srv := startSMTP(t)
	srv.srv.TLSConfig = nil // a server that cannot encrypt
	e := newEnv(t, withEmail(`email {
		from login@example.com
		smtp `+srv.tlsAddr+`
	}`))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "plain@example.com"}), http.StatusOK)
	e.untilFailing("/auth/email/", map[string]string{"email": "plain2@example.com"})
	if n := len(srv.all()); n != 0 {
		t.Fatalf("a code went out in the clear (%d messages)", n)
	}
}

func TestMethodsAndLimits(t *testing.T) {
	e := newEnv(t)
	r := e.get("/auth/email/")
	expectStatus(t, r, http.StatusMethodNotAllowed)
	if !strings.Contains(r.header.Get("Allow"), "POST") {
		t.Errorf("Allow: %q", r.header.Get("Allow"))
	}
	big := strings.Repeat("a", 70<<10)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": big}), http.StatusRequestEntityTooLarge)
	expectStatus(t, e.get("/auth/nothing-here"), http.StatusNotFound)
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusNotFound)
	expectStatus(t, e.postJSON("/auth/email/", map[string]any{"email": 5}), http.StatusBadRequest)
	expectStatus(t, e.postJSON("/auth/email/", map[string]any{"email": "a@example.com", "admin": "true"}), http.StatusBadRequest)
}
