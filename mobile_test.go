package passwordless

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// smsBlock configures the real twilio-go client against the fake Twilio.
func smsBlock(t testing.TB, tw *twilioServer, extra string) envOption {
	t.Setenv("PWL_TEST_TWILIO_TOKEN", tw.Token)
	return withConfig(`sms {
		twilio {
			account_sid ` + tw.SID + `
			auth_token {env.PWL_TEST_TWILIO_TOKEN}
			from +15550000000
			api_url ` + tw.URL + `
			timeout 2s
		}
		` + extra + `
	}`)
}

// These follow drfpasswordless's mobile tests, then go past them.

func TestMobileSignupSuccess(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, ""))
	r := e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"})
	expectStatus(t, r, http.StatusOK)
	if r.str("detail") != "A login token has been sent to your mobile." {
		t.Fatalf("body %s", r.body)
	}
	m := tw.last(t, "+15551234567")
	if m.From != "+15550000000" || !strings.HasPrefix(m.Body, "Use this code to log in: ") {
		t.Fatalf("SMS %+v", m)
	}
	code := tw.code(t, "+15551234567")
	r = e.postForm("/auth/token/", map[string]string{"mobile": "+15551234567", "token": code})
	expectStatus(t, r, http.StatusOK)
	tok := r.str("token")
	me := e.get("/auth/me", bearer(tok)...)
	if me.str("mobile") != "+15551234567" || me.json["mobile_verified"] != true || me.json["email"] != nil {
		t.Fatalf("/me %s", me.body)
	}
	up := e.get("/app", bearer(tok)...)
	if up.str("mobile") != "+15551234567" || up.str("email") != "" {
		t.Fatalf("upstream saw %s", up.body)
	}
}

func TestMobileInvalidNumber(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, ""))
	for _, bad := range []string{"5551234567", "+0123456789", "+1555123456789012", "+1 555 CALL NOW", "phone", "+"} {
		r := e.postForm("/auth/mobile/", map[string]string{"mobile": bad})
		expectStatus(t, r, http.StatusBadRequest)
		if !strings.Contains(r.str("detail"), "+15551234567") {
			t.Errorf("%q: the detail does not show the expected form: %s", bad, r.body)
		}
	}
	// People type spaces and dashes: those are fine.
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+1 555-123-4567"}), http.StatusOK)
	tw.last(t, "+15551234567")
	// So is the '+' that `curl -d mobile=+44...` leaves unencoded.
	r := e.do(http.MethodPost, "/auth/mobile/", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, strings.NewReader("mobile=+447700900123"))
	expectStatus(t, r, http.StatusOK)
	tw.last(t, "+447700900123")
	if tw.hits() != 2 {
		t.Fatalf("%d requests reached Twilio", tw.hits())
	}
}

func TestMobileWrongCode(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, ""))
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusOK)
	code := tw.code(t, "+15551234567")
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"mobile": "+15551234567", "token": wrongCode(code, 3)}), http.StatusBadRequest)
	// An email code is no mobile code, and vice versa.
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "x@example.com", "token": code}), http.StatusBadRequest)
}

func TestMobileSecondCodeInvalidatesFirst(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, ""))
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusOK)
	first := tw.code(t, "+15551234567")
	clock.Advance(time.Minute)
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusOK)
	second := tw.code(t, "+15551234567")
	if first != second {
		expectStatus(t, e.postForm("/auth/token/", map[string]string{"mobile": "+15551234567", "token": first}), http.StatusBadRequest)
	}
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"mobile": "+15551234567", "token": second}), http.StatusOK)
}

func TestMobileRegisterOff(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, ""), withConfig("register_new_users false"))
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusOK)
	if tw.hits() != 0 {
		t.Fatal("an SMS went to an unknown number")
	}
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"mobile": "+15551234567", "token": "123456"}), http.StatusBadRequest)
}

func TestMobileCountryNotAllowed(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, "allowed_country_codes +44 +33"))
	r := e.postForm("/auth/mobile/", map[string]string{"mobile": "+8821234567"})
	expectStatus(t, r, http.StatusBadRequest)
	if !strings.Contains(r.str("detail"), "+44") {
		t.Errorf("detail %q", r.str("detail"))
	}
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusBadRequest)
	if tw.hits() != 0 {
		t.Fatal("a refused country reached Twilio")
	}
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+447700900123"}), http.StatusOK)
}

func TestMobileCustomMessage(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, `message "{code} is your Example code"`))
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusOK)
	code := tw.code(t, "+15551234567")
	if got := tw.last(t, "+15551234567").Body; got != code+" is your Example code" {
		t.Fatalf("body %q", got)
	}
}

func TestTwilioRejectsNumber(t *testing.T) {
	for _, code := range []int{21211, 21614} {
		tw := startTwilio(t)
		e := newEnv(t, smsBlock(t, tw, ""))
		tw.fail(400, code, "The 'To' number +15005550001 is not a valid phone number.")
		r := e.postForm("/auth/mobile/", map[string]string{"mobile": "+15005550001"})
		expectStatus(t, r, http.StatusBadRequest)
		if r.str("detail") == "" || len(r.json["mobile"].([]any)) != 1 {
			t.Fatalf("%d: body %s", code, r.body)
		}
	}
}

func TestTwilioFailureIs503(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, ""), withConfig("rate_limit {\n send_interval 0s\n}"))
	for name, fail := range map[string]func(){
		"server error": func() { tw.fail(500, 0, "") },
		"bad auth":     func() { tw.fail(401, 20003, "Authenticate") },
		"down for maintenance": func() {
			tw.fail(503, 0, "")
		},
	} {
		fail()
		r := e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"})
		if r.status != http.StatusServiceUnavailable || r.str("detail") == "" {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
		if strings.Contains(string(r.body), tw.Token) || strings.Contains(string(r.body), tw.SID) {
			t.Errorf("%s: the response names a secret: %s", name, r.body)
		}
	}
	// The service comes back, and so does login.
	tw.failNone()
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusOK)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"mobile": "+15551234567", "token": tw.code(t, "+15551234567")}), http.StatusOK)
}

func TestTwilioTimeoutIs503(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, ""))
	tw.hang(true)
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusServiceUnavailable)
}

func TestNoSMSBlockIs404(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusNotFound)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"mobile": "+15551234567", "token": "123456"}), http.StatusBadRequest)
}
