package passwordless

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// smsBlock configures the real twilio-go client against the fake Twilio.
func smsBlock(t testing.TB, tw *twilioServer, extra string) envOption {
	t.Setenv("PWL_TEST_TWILIO_TOKEN", tw.Token)
	return func(c *envConfig) {
		c.started = append(c.started, func(e *env) { tw.settle = e.drain })
		withConfig(smsConfig(tw, extra))(c)
	}
}

func smsConfig(tw *twilioServer, extra string) string {
	return `sms {
		twilio {
			account_sid ` + tw.SID + `
			auth_token {env.PWL_TEST_TWILIO_TOKEN}
			from +15550000000
			api_url ` + tw.URL + `
			timeout 2s
		}
		` + extra + `
	}`
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
	e.drain()
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

// A number Twilio refuses (21211, 21614) is the user's input, not an
// outage: the request was answered 200 like any other, the message is
// dropped without a retry, its code voided, and the channel keeps working.
func TestTwilioRejectsNumber(t *testing.T) {
	for _, code := range []int{21211, 21614} {
		tw := startTwilio(t)
		logOpt, logPath := captureLog(t)
		e := newEnv(t, smsBlock(t, tw, ""), logOpt)
		tw.fail(400, code, "The 'To' number +15005550001 is not a valid phone number.")
		expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15005550001"}), http.StatusOK)
		eventually(t, "the delivery attempt", func() bool { return tw.hits() == 1 })
		tw.failNone()
		// Any retry would be due by now, and before the next message.
		clock.Advance(5 * time.Minute)
		expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusOK)
		tw.last(t, "+15551234567")
		e.drain()
		if n := tw.hits(); n != 2 {
			t.Fatalf("%d: %d requests to Twilio; the refused number was retried", code, n)
		}
		if len(tw.messages()) != 1 {
			t.Fatalf("%d: %d messages accepted", code, len(tw.messages()))
		}
		// The refusal is logged with Twilio's error code, never with the code.
		tw.mu.Lock()
		refusedCode := sixDigits.FindString(tw.refused[0])
		tw.mu.Unlock()
		whole, entries := readLog(t, logPath)
		if refusedCode == "" || strings.Contains(whole, refusedCode) {
			t.Fatalf("%d: the refused message's code %q is in the log", code, refusedCode)
		}
		logged := false
		for _, l := range entries {
			logged = logged || l.str("msg") == "delivery failed" && strings.Contains(l.str("error"), fmt.Sprint(code))
		}
		if !logged {
			t.Fatalf("%d: no log entry names the refusal:\n%s", code, whole)
		}
	}
}

// While Twilio fails (server errors, bad credentials, a timeout), code
// requests answer 503 naming no secret; when it works again, so does login.
func TestTwilioFailureIs503(t *testing.T) {
	for name, fail := range map[string]func(*twilioServer){
		"server error":         func(tw *twilioServer) { tw.fail(500, 0, "") },
		"bad auth":             func(tw *twilioServer) { tw.fail(401, 20003, "Authenticate") },
		"down for maintenance": func(tw *twilioServer) { tw.fail(503, 0, "") },
		"too many requests":    func(tw *twilioServer) { tw.fail(429, 20429, "Too Many Requests") },
		"timeout":              func(tw *twilioServer) { tw.hang(true) },
	} {
		t.Run(name, func(t *testing.T) {
			tw := startTwilio(t)
			e := newEnv(t, smsBlock(t, tw, ""), withConfig("rate_limit {\n send_interval 0s\n per_alias 1000 1h\n per_ip 1000 1h\n}"))
			fail(tw)
			expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusOK)
			r := e.untilFailing("/auth/mobile/", map[string]string{"mobile": "+15557654321"})
			if r.str("detail") == "" || strings.Contains(string(r.body), tw.Token) || strings.Contains(string(r.body), tw.SID) {
				t.Errorf("503 body: %s", r.body)
			}
			// The service comes back: the next probe finds it so.
			tw.failNone()
			tw.hang(false)
			clock.Advance(probeEvery)
			eventually(t, "code requests to be answered again", func() bool {
				return e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}).status == http.StatusOK
			})
			e.drain()
			expectStatus(t, e.postForm("/auth/token/", map[string]string{"mobile": "+15551234567", "token": tw.code(t, "+15551234567")}), http.StatusOK)
		})
	}
}

func TestNoSMSBlockIs404(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551234567"}), http.StatusNotFound)
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"mobile": "+15551234567", "token": "123456"}), http.StatusBadRequest)
}

// Anyone may ask for a code to the site's own sending number; Twilio
// answers 400/21266 ("To" and "From" are the same). Like any other 4xx
// about one message, that drops the message and closes SMS for nobody.
func TestTwilioRefusalKeepsSMSOpen(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, ""), withConfig(openLimits))
	for i := range 3 {
		hits := tw.hits()
		expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15550000000"}), http.StatusOK)
		eventually(t, "Twilio's refusal", func() bool { return tw.hits() > hits })
		e.drain()
		expectStatus(t, e.get("/auth/health"), http.StatusOK)
		other := fmt.Sprintf("+1555123456%d", i)
		expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": other}), http.StatusOK)
		expectStatus(t, e.postForm("/auth/token/", map[string]string{"mobile": other, "token": tw.code(t, other)}), http.StatusOK)
	}
	for _, m := range tw.messages() {
		if m.To == "+15550000000" {
			t.Fatal("Twilio took a message to its own number")
		}
	}
}
