package passwordless

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// ssoApp is an app behind the sign-in: a page that says who is signed in,
// with the sign-out button apps put on their pages.
func ssoApp(t *testing.T, logout string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page := "https://" + r.Host + r.URL.Path
		fmt.Fprintf(w, `<!doctype html><title>app</title><p id="who">%s</p>
<form method="post" action="%s"><input type="hidden" name="next" value="%s"><button id="signout">Sign out</button></form>`,
			html.EscapeString(r.Header.Get("X-Auth-User-Email")), logout, html.EscapeString(page))
	}))
	t.Cleanup(s.Close)
	return s
}

// presentedKeys are the SPKI hashes of the certificates the test Caddy
// presents for hosts, for Chromium to accept them as it would a trusted
// CA's (--ignore-certificate-errors-spki-list).
func presentedKeys(t *testing.T, addr string, hosts ...string) string {
	t.Helper()
	var out []string
	for _, h := range hosts {
		for _, cert := range servedCertificates(t, addr, h) {
			sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
			out = append(out, base64.StdEncoding.EncodeToString(sum[:]))
		}
	}
	return strings.Join(out, ",")
}

// servedCertificates waits until Caddy at addr presents a certificate for
// host, and returns the chain. Caddy issues its certificates just after a
// config loads, in the background: a handshake before that fails with
// "tls: internal error".
func servedCertificates(t *testing.T, addr, host string) []*x509.Certificate {
	t.Helper()
	var c *tls.Conn
	eventually(t, "a certificate for "+host, func() bool {
		var err error
		c, err = tls.Dial("tcp", addr, &tls.Config{ServerName: host, InsecureSkipVerify: true})
		return err == nil
	})
	defer c.Close()
	return c.ConnectionState().PeerCertificates
}

// TestSingleSignOnInTheBrowser: auth.example.test signs people in for
// every host of example.test; app1 is protected in Caddy, app2 by Caddy's
// forward_auth asking the check. One sign-in lets the browser into both,
// one sign-out ends both, and a return URL to a foreign host keeps the
// browser on the auth host.
func TestSingleSignOnInTheBrowser(t *testing.T) {
	const (
		auth = "https://auth.example.test:9443"
		app1 = "https://app1.example.test:9443"
		app2 = "https://app2.example.test:9443"
	)
	app := ssoApp(t, auth+"/auth/logout")
	db := filepath.Join(t.TempDir(), "pwl.db")
	block := func(extra string) string {
		return fmt.Sprintf(`passwordless {
		storage sqlite %s
		login_url %s/auth/login
		cookie_domain example.test
		demo_user demo@example.test 135790
		%s
	}`, db, auth, extra)
	}
	upstream := strings.TrimPrefix(app.URL, "http://")
	newTester(t, fmt.Sprintf(`{
	admin localhost:2999
	http_port %[1]d
	https_port 9443
	skip_install_trust
	grace_period 1ms
	local_certs
	# The check site shares port %[1]d with the redirects to HTTPS, which
	# would answer forward_auth's requests for app2.example.test.
	auto_https disable_redirects
	servers {
		trusted_proxies static 127.0.0.1/32 ::1/128
	}
}
auth.example.test:9443 {
	tls internal
	%[2]s
	respond "Signed in at the auth host."
}
app1.example.test:9443 {
	tls internal
	%[3]s
	reverse_proxy %[4]s
}
app2.example.test:9443 {
	tls internal
	forward_auth 127.0.0.1:%[1]d {
		uri /auth/check
		copy_headers X-Auth-User-Id X-Auth-User-Email
	}
	reverse_proxy %[4]s
}
http://:%[1]d {
	%[3]s
}
`, testPort, block("email {\n\t\t\tlog\n\t\t}"), block(""), upstream))

	keys := presentedKeys(t, "127.0.0.1:9443", "auth.example.test", "app1.example.test", "app2.example.test")
	ctx := chromium(t,
		chromedp.Flag("host-resolver-rules", "MAP *.example.test 127.0.0.1"),
		chromedp.Flag("ignore-certificate-errors-spki-list", keys))
	alias, code := chromedp.CSS("#alias"), chromedp.CSS("#code")
	body := func() string { return read(t, ctx, chromedp.Evaluate[string](`document.body.innerText`)) }
	signIn := func(next string) {
		t.Helper()
		browse(t, ctx, chromedp.WaitVisible(alias), chromedp.SendKeys(alias, "demo@example.test"), chromedp.Submit(alias),
			chromedp.WaitVisible(code), chromedp.SendKeys(code, "135790"), chromedp.Submit(code))
		waitLocation(t, ctx, next)
	}
	sentToSignIn := func(page string) {
		t.Helper()
		browse(t, ctx, chromedp.Navigate(page), chromedp.WaitVisible(alias))
		if loc := read(t, ctx, chromedp.Location()); !strings.HasPrefix(loc, auth+"/auth/login?next=") {
			t.Fatalf("%s sent the browser to %s", page, loc)
		}
	}

	// One sign-in, on the auth host, for app1...
	sentToSignIn(app1 + "/page")
	signIn(app1 + "/page")
	if who := body(); !strings.Contains(who, "demo@example.test") {
		t.Fatalf("app1 after sign-in: %q", who)
	}
	// The browser holds one cookie for the domain, out of scripts' reach.
	cookies := read(t, ctx, chromedp.Action[[]*network.Cookie](func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{auth, app1, app2}})
		return res.Cookies, err
	}))
	if len(cookies) != 1 {
		t.Fatalf("cookies %+v", cookies)
	}
	if c := cookies[0]; c.Name != domainCookieName || c.Domain != ".example.test" || !c.Secure || !c.HTTPOnly || c.Path != "/" || c.SameSite != network.CookieSameSiteLax {
		t.Fatalf("cookie %+v", c)
	}
	// ... lets the browser into app2 without another.
	browse(t, ctx, chromedp.Navigate(app2+"/page"))
	waitLocation(t, ctx, app2+"/page")
	if who := body(); !strings.Contains(who, "demo@example.test") {
		t.Fatalf("app2 after signing in at app1: %q", who)
	}

	// Signing out from app1 ends both.
	browse(t, ctx, chromedp.Navigate(app1+"/page"), chromedp.WaitVisible(chromedp.CSS("#signout")), chromedp.Click(chromedp.CSS("#signout")),
		chromedp.WaitVisible(alias))
	if loc := read(t, ctx, chromedp.Location()); !strings.HasPrefix(loc, auth+"/auth/login?next=") {
		t.Fatalf("after sign-out the browser is at %s", loc)
	}
	sentToSignIn(app2 + "/page")
	sentToSignIn(app1 + "/other")

	// A return URL to a foreign host keeps the browser on the auth host.
	clock.Advance(2 * time.Minute) // past the least time between two codes
	browse(t, ctx, chromedp.Navigate(auth+"/auth/login?next=https%3A%2F%2Fevil.example%2Fsteal"))
	signIn(auth + "/")
	if got := body(); !strings.Contains(got, "Signed in at the auth host.") {
		t.Fatalf("auth host after a foreign next: %q", got)
	}
}
