package passwordless

import (
	"html"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

var (
	verbs = regexp.MustCompile(`%(\[\d+\])?[a-z]`)
	// sentences splits a message into the runs of words a translation
	// must not keep: between format verbs and sentence ends.
	sentences = regexp.MustCompile(`%(\[\d+\])?[a-z]|[.!?;:]\s+`)
)

// TestCatalogsComplete: every built-in language has exactly the messages
// English has, none empty, each with the same format verbs.
func TestCatalogsComplete(t *testing.T) {
	en := catalogs["en"]
	if len(en) < 50 {
		t.Fatalf("the English catalog has only %d messages", len(en))
	}
	for _, lang := range builtinLanguages {
		c := catalogs[lang]
		var missing, extra []string
		for k := range en {
			if _, ok := c[k]; !ok {
				missing = append(missing, k)
			}
		}
		for k, v := range c {
			if _, ok := en[k]; !ok {
				extra = append(extra, k)
				continue
			}
			if strings.TrimSpace(v) == "" {
				t.Errorf("%s: %q is empty", lang, k)
			}
			want, got := verbs.FindAllString(en[k], -1), verbs.FindAllString(v, -1)
			sort.Strings(want)
			sort.Strings(got)
			if strings.Join(want, " ") != strings.Join(got, " ") {
				t.Errorf("%s: %q has verbs %v, English %v", lang, k, got, want)
			}
		}
		sort.Strings(missing)
		sort.Strings(extra)
		if len(missing) > 0 {
			t.Errorf("%s lacks %d messages English has: %q", lang, len(missing), missing)
		}
		if len(extra) > 0 {
			t.Errorf("%s has %d messages English lacks: %q", lang, len(extra), extra)
		}
	}
}

var (
	tagOrScript = regexp.MustCompile(`(?s)<(script|style)[^>]*>.*?</(script|style)>|<[^>]+>`)
	attrText    = regexp.MustCompile(`(?:placeholder|alt|title|aria-label)="([^"]*)"`)
)

// visibleText is what a person reads on a page: its text, and the
// attributes that are read out or shown.
func visibleText(page string) string {
	var b strings.Builder
	for _, m := range attrText.FindAllStringSubmatch(page, -1) {
		b.WriteString(html.UnescapeString(m[1]) + "\n")
	}
	b.WriteString(html.UnescapeString(tagOrScript.ReplaceAllString(page, "\n")))
	return b.String()
}

// englishLeft returns the English page sentences found in text: the runs
// of two or more words of every English page message (a word shared by
// both languages, such as Code or Logo, is no English left over).
func englishLeft(lang, text string) []string {
	var left []string
	for k, en := range catalogs["en"] {
		if strings.Contains(k, " ") {
			continue // API messages, keyed by their English text
		}
		for _, part := range sentences.Split(en, -1) {
			part = strings.TrimSpace(strings.Trim(part, ".:!?,\""))
			if len(part) >= 8 && strings.Contains(part, " ") && strings.Contains(text, part) {
				left = append(left, part)
			}
		}
	}
	return left
}

// TestSignInPageEveryLanguage: in every built-in language, the sign-in
// page, the code step, the 403-like problem pages carry no English
// sentence, and say which language they are in.
func TestSignInPageEveryLanguage(t *testing.T) {
	e := newEnv(t, withConfig(`branding {
		name "Example"
	}`))
	for _, lang := range builtinLanguages {
		page := e.get("/auth/login?next=/app&lang=" + lang)
		expectStatus(t, page, http.StatusOK)
		body := string(page.body)
		if !strings.Contains(body, `<html lang="`+lang+`">`) || page.header.Get("Content-Language") != lang {
			t.Fatalf("%s: html lang or Content-Language wrong: %v\n%s", lang, page.header, body)
		}
		if !strings.Contains(body, catalogs[lang]["login.send"]) {
			t.Errorf("%s: the page does not say %q", lang, catalogs[lang]["login.send"])
		}
		code := e.postForm("/auth/login", map[string]string{"alias": "who-" + lang + "@example.com", "next": "/app", "lang": lang}, "Origin", testBase)
		expectStatus(t, code, http.StatusOK)
		if !strings.Contains(string(code.body), `name="lang" value="`+lang+`"`) {
			t.Errorf("%s: the code step does not keep the language", lang)
		}
		clock.Advance(2 * time.Minute)
		if lang == "en" {
			continue
		}
		for _, p := range []response{page, code} {
			if left := englishLeft(lang, visibleText(string(p.body))); len(left) > 0 {
				t.Errorf("%s: English left on the page: %q", lang, left)
			}
		}
	}
}

// TestLanguageChoice: lang parameter, else Accept-Language among the
// offered languages, else default_language; pages say which and vary.
func TestLanguageChoice(t *testing.T) {
	e := newEnv(t, withConfig(`branding {
		languages en de fr pt-BR
		default_language fr
	}`))
	cases := []struct {
		query, accept, want string
	}{
		{"", "", "fr"},                        // nothing asked: the default
		{"", "de-CH, en;q=0.5", "de"},         // a regional variant of an offered language
		{"", "pt-BR", "pt-BR"},                // a region that is a language of its own here
		{"", "pt-PT, pt;q=0.9", "pt-BR"},      // the nearest offered
		{"", "ja, it;q=0.8", "fr"},            // none offered: the default
		{"", "en-US,en;q=0.9,de;q=0.8", "en"}, // the first preference wins
		{"", "*", "fr"},                       // anything: the default
		{"", "de;q=0.2, en;q=0.9", "en"},      // quality, not order
		{"", "!!not a header", "fr"},          // unreadable: the default
		{"lang=de", "en", "de"},               // the parameter over the header
		{"lang=PT-br", "", "pt-BR"},           // spelt any way
		{"lang=ja", "de", "de"},               // not offered: ignored
		{"lang=xx", "", "fr"},                 // unknown: ignored
	}
	for _, c := range cases {
		page := e.get("/auth/login?"+c.query, "Accept-Language", c.accept)
		expectStatus(t, page, http.StatusOK)
		if got := page.header.Get("Content-Language"); got != c.want {
			t.Errorf("?%s, Accept-Language %q: %s, want %s", c.query, c.accept, got, c.want)
		}
		if !strings.Contains(string(page.body), `<html lang="`+c.want+`">`) {
			t.Errorf("?%s, Accept-Language %q: html lang is not %s", c.query, c.accept, c.want)
		}
		if !strings.Contains(page.header.Get("Vary"), "Accept-Language") {
			t.Errorf("no Vary: Accept-Language: %v", page.header)
		}
		keeps := strings.Contains(string(page.body), `name="lang" value="`+c.want+`"`)
		if fromQuery := c.query != "" && strings.EqualFold(strings.TrimPrefix(c.query, "lang="), c.want); keeps != fromQuery {
			t.Errorf("?%s: the form keeps the lang parameter: %v", c.query, keeps)
		}
	}
}

// TestAPIDetailLanguage: the API's details follow the same choice; keys
// and statuses never change, and a client that sends no Accept-Language
// gets the English text drf clients know.
func TestAPIDetailLanguage(t *testing.T) {
	e := newEnv(t)
	bad := e.postForm("/auth/email/", map[string]string{"email": "not-an-address"}, "Accept-Language", "de-DE,de;q=0.9")
	expectStatus(t, bad, http.StatusBadRequest)
	want := "Geben Sie eine gültige E-Mail-Adresse ein."
	if bad.str("detail") != want {
		t.Fatalf("German detail: %s", bad.body)
	}
	if list, _ := bad.json["email"].([]any); len(list) != 1 || list[0] != want {
		t.Fatalf("the field key lost its message: %s", bad.body)
	}
	plain := e.postForm("/auth/email/", map[string]string{"email": "not-an-address"})
	expectStatus(t, plain, http.StatusBadRequest)
	if plain.str("detail") != "Enter a valid email address." {
		t.Fatalf("without Accept-Language: %s", plain.body)
	}
	ok := e.postForm("/auth/email/", map[string]string{"email": "api@example.com"}, "Accept-Language", "ja")
	expectStatus(t, ok, http.StatusOK)
	if ok.str("detail") != "ログイン用のコードをメールでお送りしました。" {
		t.Fatalf("Japanese success: %s", ok.body)
	}
	// A message with a number in it keeps the number.
	limited := e.postForm("/auth/email/", map[string]string{"email": "api@example.com"}, "Accept-Language", "fr")
	expectStatus(t, limited, http.StatusTooManyRequests)
	if d := limited.str("detail"); !strings.HasPrefix(d, "Trop de requêtes. Réessayez dans ") || limited.header.Get("Retry-After") == "" {
		t.Fatalf("French 429: %s %v", limited.body, limited.header)
	}
	noAuth := e.get("/auth/me", "Accept-Language", "nl")
	expectStatus(t, noAuth, http.StatusUnauthorized)
	if noAuth.str("detail") != "Er zijn geen inloggegevens meegestuurd." || noAuth.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("Dutch 401: %s %v", noAuth.body, noAuth.header)
	}
	e.smtp.last(t, "api@example.com")
}

// TestFrenchCodeMessages: a code asked for in French arrives in French, by
// mail through the SMTP server and by SMS through the Twilio server; a
// request in no particular language stays English.
func TestFrenchCodeMessages(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, ""), withEmailOption("link_base "+testBase))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "marie@example.com"}, "Accept-Language", "fr-FR,fr;q=0.9"), http.StatusOK)
	m := e.smtp.last(t, "marie@example.com")
	code := e.smtp.code(t, "marie@example.com")
	if m.Header.Get("Subject") != "Votre code de connexion" {
		t.Errorf("subject %q", m.Header.Get("Subject"))
	}
	if !strings.Contains(m.Text, "Votre code de connexion est "+code) || !strings.Contains(m.Text, "Il expire dans 15 minutes.") {
		t.Errorf("text part:\n%s", m.Text)
	}
	if !strings.Contains(m.HTML, `<html lang="fr">`) || !strings.Contains(m.HTML, "Votre code de connexion est :") || !strings.Contains(m.HTML, "Se connecter") {
		t.Errorf("HTML part:\n%s", m.HTML)
	}
	if !strings.Contains(m.Text, "lang=fr#code=") {
		t.Errorf("the sign-in link does not keep the language:\n%s", m.Text)
	}
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+33612345678"}, "Accept-Language", "fr"), http.StatusOK)
	if sms := tw.last(t, "+33612345678"); !strings.HasPrefix(sms.Body, "Votre code de connexion : ") {
		t.Errorf("SMS %q", sms.Body)
	}
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551230000"}), http.StatusOK)
	if sms := tw.last(t, "+15551230000"); !strings.HasPrefix(sms.Body, "Use this code to log in: ") {
		t.Errorf("English SMS %q", sms.Body)
	}
	// The sign-in form asks in the page's language, too.
	expectStatus(t, e.postForm("/auth/login?lang=de", map[string]string{"alias": "jonas@example.com", "next": "/"}, "Origin", testBase), http.StatusOK)
	if m := e.smtp.last(t, "jonas@example.com"); m.Header.Get("Subject") != "Ihr Anmeldecode" {
		t.Errorf("German subject %q", m.Header.Get("Subject"))
	}
}

// TestProblemPages: being limited, and a spent sign-in link, get pages of
// the layout that keep their status and lead back to the form.
func TestProblemPages(t *testing.T) {
	e := newEnv(t, withConfig(`branding {
		name "Example"
	}`))
	origin := []string{"Origin", testBase, "Accept-Language", "de"}
	expectStatus(t, e.postForm("/auth/login", map[string]string{"alias": "p@example.com", "next": "/app"}, origin...), http.StatusOK)
	limited := e.postForm("/auth/login", map[string]string{"alias": "p@example.com", "next": "/app"}, origin...)
	expectStatus(t, limited, http.StatusTooManyRequests)
	body := string(limited.body)
	if limited.header.Get("Retry-After") == "" || !strings.Contains(body, catalogs["de"]["limited.title"]) ||
		!strings.Contains(body, `href="/auth/login?next=%2Fapp"`) || !strings.Contains(body, "Example") {
		t.Fatalf("429 page: %v\n%s", limited.header, body)
	}
	code := e.smtp.code(t, "p@example.com")
	m := e.smtp.last(t, "p@example.com")
	if subject, _ := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject")); subject != "Ihr Anmeldecode für Example" || !strings.Contains(strings.ReplaceAll(m.Text, "\r\n", "\n"), "\nExample\n") {
		t.Errorf("the mail does not name the site: %q\n%s", subject, m.Text)
	}
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	spent := e.postForm("/auth/login", map[string]string{"alias": "p@example.com", "code": wrong, "next": "/app", "link": "1"}, origin...)
	expectStatus(t, spent, http.StatusBadRequest)
	if !strings.Contains(string(spent.body), catalogs["de"]["expired.title"]) {
		t.Fatalf("spent link page:\n%s", spent.body)
	}
	// Typed by hand, a wrong code is the form again with the error.
	typed := e.postForm("/auth/login", map[string]string{"alias": "p@example.com", "code": wrong, "next": "/app"}, origin...)
	expectStatus(t, typed, http.StatusBadRequest)
	if !strings.Contains(string(typed.body), `role="alert"`) || !strings.Contains(string(typed.body), `name="code"`) {
		t.Fatalf("wrong code page:\n%s", typed.body)
	}

	// The mail server is down: a page that names nothing of it.
	e.smtp.down()
	clock.Advance(probeEvery) // a probe is due, and finds it
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "down@example.com"}), http.StatusOK)
	eventually(t, "the channel to be failing", func() bool { return e.get("/auth/health").status == http.StatusServiceUnavailable })
	down := e.postForm("/auth/login", map[string]string{"alias": "q@example.com", "next": "/app"}, origin...)
	expectStatus(t, down, http.StatusServiceUnavailable)
	if !strings.Contains(string(down.body), catalogs["de"]["unavailable.title"]) || down.header.Get("Retry-After") == "" ||
		strings.Contains(string(down.body), "127.0.0.1") {
		t.Fatalf("503 page: %v\n%s", down.header, down.body)
	}
}

// TestBrandingCaddyfile: each option's checks name the Caddyfile line.
func TestBrandingCaddyfile(t *testing.T) {
	good := `passwordless {
		branding {
			name "Example Shop"
			logo /static/logo.svg
			color "#0b5fff"
			languages en de pt_br
			default_language de
		}
	}`
	var p Passwordless
	if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(good)); err != nil {
		t.Fatal(err)
	}
	b := p.Branding
	if b.Name != "Example Shop" || b.Logo != "/static/logo.svg" || b.Color != "#0b5fff" ||
		strings.Join(b.Languages, " ") != "en de pt-BR" || b.DefaultLanguage != "de" {
		t.Fatalf("%+v", b)
	}
	for _, c := range []struct{ option, want string }{
		{"color ffcc00", "contrast of 1.51:1"}, // yellow: white text unreadable
		{`color "#1a7fd4"`, "below the 4.5:1"}, // a blue just too light
		{"color blue", "not a colour"},         // names are not accepted
		{"color 12345", "not a colour"},
		{"color #0b5fff", "quoted"},                //
		{"logo http://example.com/l.svg", "https"}, // mixed content
		{"logo //cdn.example.com/l.svg", "https"},  // another host, scheme-relative
		{"logo javascript:alert(1)", "https"},
		{"logo https://evil.example;script-src/x.svg", "https"}, // would add to the CSP      //
		{"languages en klingon", `"klingon" is not a built-in language`},
		{"default_language xx", "not a built-in language"},
		{"languages de fr\n\t\t\tdefault_language en", "default_language en is not among languages de fr"},
		{"colour #000000", `unrecognized branding option "colour"`},
		{"name", "wrong argument count"},
	} {
		src := "passwordless {\n\tbranding {\n\t\t\t" + c.option + "\n\t}\n}"
		var p Passwordless
		err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "Testfile:") {
			t.Errorf("%q: %v, want %q with the line", c.option, err, c.want)
		}
	}
	var twice Passwordless
	if err := twice.UnmarshalCaddyfile(caddyfile.NewTestDispenser("passwordless {\n branding\n branding\n}")); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("branding twice: %v", err)
	}
	for _, c := range []struct{ color, dark string }{{"#1a5fb4", ""}, {"#000000", ""}, {"#0b5fff", ""}} {
		if err := checkAccent(c.color); err != nil {
			t.Errorf("%s refused: %v", c.color, err)
		}
		col, _ := parseColor(c.color)
		dark, _ := parseColor(readableOn(col, darkCard))
		if r := contrast(dark, darkCard); r < 4.5 {
			t.Errorf("%s in the dark theme: %.2f:1", c.color, r)
		}
	}
}

// TestBrandingTemplates: own templates replace the built-in ones page by
// page; a broken one stops the config from loading, naming file and line.
func TestBrandingTemplates(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "login.html"), []byte(`{{define "title"}}Own{{end}}
{{define "content"}}<h1>Our own sign-in</h1><p>{{.T "login.hint"}}</p>
<form method="post" action="{{.Action}}"><input type="hidden" name="next" value="{{.Next}}"><label for="alias">Who</label><input id="alias" name="alias"><button>Go</button></form>{{end}}
`), 0o644)
	e := newEnv(t, withConfig(`branding {
		name "Example"
		logo https://cdn.example.com/logo.svg
		color "#0b5fff"
		templates `+dir+`
	}`))
	page := e.get("/auth/login", "Accept-Language", "it")
	body := string(page.body)
	if !strings.Contains(body, "Our own sign-in") || !strings.Contains(body, catalogs["it"]["login.hint"]) ||
		!strings.Contains(body, `--accent: #0b5fff`) || !strings.Contains(body, `src="https://cdn.example.com/logo.svg"`) {
		t.Fatalf("own login page:\n%s", body)
	}
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "img-src https://cdn.example.com;") {
		t.Errorf("CSP %q", csp)
	}

	broken := filepath.Join(dir, "forbidden.html")
	os.WriteFile(broken, []byte("{{define \"content\"}}\n<p>fine</p>\n<p>{{.Who}</p>\n{{end}}\n"), 0o644)
	err := loadCaddyfile(t, `http://localhost:9080 {
	passwordless {
		storage sqlite `+filepath.Join(t.TempDir(), "pwl.db")+`
		email {
			log
		}
		branding {
			templates `+dir+`
		}
	}
	respond ok
}`)
	if err == nil || !strings.Contains(err.Error(), broken+":3:") {
		t.Fatalf("a broken template: %v", err)
	}
	if err := loadCaddyfile(t, `http://localhost:9080 {
	passwordless {
		storage sqlite `+filepath.Join(t.TempDir(), "pwl.db")+`
		email {
			log
		}
		branding {
			templates `+filepath.Join(dir, "nowhere")+`
		}
	}
	respond ok
}`); err == nil || !strings.Contains(err.Error(), "not a readable directory") {
		t.Fatalf("a missing directory: %v", err)
	}
}

// TestAPIDefaultLanguage: with default_language set, a client that asks
// for no language gets it; one that asks for English gets today's text.
func TestAPIDefaultLanguage(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "code.txt")
	os.WriteFile(text, []byte(`[{{.Lang}}] {{.T "email.login" .Code}}`), 0o644)
	e := newEnv(t, withEmailOption("text_template "+text), withConfig(`branding {
		default_language de
	}`))
	r := e.postJSON("/auth/token/", map[string]string{"email": "x@example.com"})
	expectStatus(t, r, http.StatusBadRequest)
	if r.str("detail") != "Dieses Feld ist erforderlich." {
		t.Fatalf("no Accept-Language, default de: %s", r.body)
	}
	r = e.postJSON("/auth/token/", map[string]string{"email": "x@example.com"}, "Accept-Language", "en-GB")
	if r.str("detail") != "This field is required." || r.json["token"] == nil {
		t.Fatalf("English asked for: %s", r.body)
	}
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "own@example.com"}, "Accept-Language", "nl"), http.StatusOK)
	if m := e.smtp.last(t, "own@example.com"); !strings.HasPrefix(strings.TrimSpace(m.Text), "[nl] Je inlogcode is ") {
		t.Fatalf("own template: %q", m.Text)
	}
}

// TestAccountPageEveryLanguage: the account page and the sign-in page's
// passkey button, and the words their script shows, speak every language.
func TestAccountPageEveryLanguage(t *testing.T) {
	e := newEnv(t, withConfig(passkeysBlock))
	tok := e.login("acct@example.com").str("token")
	for _, lang := range builtinLanguages {
		page := e.get("/auth/account?lang="+lang, bearer(tok)...)
		expectStatus(t, page, http.StatusOK)
		login := e.get("/auth/login?lang=" + lang)
		for _, p := range []response{page, login} {
			body := string(p.body)
			if !strings.Contains(body, `<html lang="`+lang+`">`) || p.header.Get("Content-Language") != lang {
				t.Fatalf("%s: not in its language: %v\n%s", lang, p.header, body)
			}
			// The script's words travel in data-msg-* attributes.
			text := visibleText(body)
			for _, m := range regexp.MustCompile(`data-msg-[a-z-]+="([^"]*)"`).FindAllStringSubmatch(body, -1) {
				text += "\n" + html.UnescapeString(m[1])
			}
			if lang == "en" {
				continue
			}
			if left := englishLeft(lang, text); len(left) > 0 {
				t.Errorf("%s: English left: %q", lang, left)
			}
		}
		if !strings.Contains(string(page.body), catalogs[lang]["account.add"]) || !strings.Contains(string(login.body), catalogs[lang]["passkey.sign_in"]) {
			t.Errorf("%s: the passkey words are missing", lang)
		}
	}
}
