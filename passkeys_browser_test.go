package passwordless

import (
	"strings"
	"testing"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// recordMediation makes every page note in sessionStorage how it last
// called navigator.credentials.get: "conditional" (autofill) or "modal".
const recordMediation = `(function () {
  if (!navigator.credentials) { return; }
  var get = navigator.credentials.get.bind(navigator.credentials);
  navigator.credentials.get = function (o) {
    sessionStorage.setItem("pwl-mediation", (o && o.mediation) || "modal");
    return get(o);
  };
})();`

// noAutofill makes the browser one without passkey autofill, where the
// button is the way.
const noAutofill = `if (window.PublicKeyCredential) {
  PublicKeyCredential.isConditionalMediationAvailable = function () { return Promise.resolve(false); };
}`

// TestBrowserPasskeys is the passkey story in a real Chromium with the
// DevTools virtual authenticator (CTAP2, resident keys, user
// verification): sign in with a code, add a passkey on the account page,
// sign out, and sign back in with the passkey alone, once through
// autofill and once through the button, landing on the protected
// upstream.
func TestBrowserPasskeys(t *testing.T) {
	ctx := chromium(t)
	e := newEnv(t, withConfig(passkeysBlock))
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	_, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{Options: &webauthn.VirtualAuthenticatorOptions{
		Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21, Transport: webauthn.AuthenticatorTransportInternal,
		HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: recordMediation}); err != nil {
		t.Fatal(err)
	}
	text := func() string { return read(t, ctx, chromedp.Evaluate[string](`document.body.innerText`)) }
	mediation := func() string {
		return read(t, ctx, chromedp.Evaluate[string](`sessionStorage.getItem("pwl-mediation") || ""`))
	}

	// Signed out, the account page leads to the sign-in; a code signs in.
	alias, code := chromedp.CSS("#alias"), chromedp.CSS("#code")
	browse(t, ctx, chromedp.Navigate(testBase+"/auth/account"), chromedp.WaitVisible(alias))
	if ac := read(t, ctx, chromedp.AttributeValue(alias, "autocomplete")).Value; ac != "username webauthn" {
		t.Fatalf("the alias field's autocomplete is %q", ac)
	}
	browse(t, ctx, chromedp.SendKeys(alias, "ada@example.com"), chromedp.Submit(alias), chromedp.WaitVisible(code))
	browse(t, ctx, chromedp.SendKeys(code, e.smtp.code(t, "ada@example.com")), chromedp.Submit(code))
	waitLocation(t, ctx, testBase+"/auth/account")

	// The account page: aliases, no passkey yet; one is added and listed.
	if body := text(); !strings.Contains(body, "ada@example.com") || !strings.Contains(body, "no passkeys yet") {
		t.Fatalf("account page: %s", body)
	}
	browse(t, ctx, chromedp.WaitVisible(chromedp.CSS("#passkey-add")),
		chromedp.SendKeys(chromedp.CSS("#passkey-new-name"), "Test laptop"),
		chromedp.Click(chromedp.CSS("#passkey-add button")),
		chromedp.WaitVisible(chromedp.CSS("li[data-passkey] .passkey-name")))
	if name := read(t, ctx, chromedp.Text(chromedp.CSS("li[data-passkey] .passkey-name"))); name != "Test laptop" {
		t.Fatalf("listed passkey %q: %s", name, text())
	}

	// Sign out; the sign-in page starts autofill at once, and the virtual
	// authenticator answers it: signed in with no click and no code.
	browse(t, ctx, chromedp.Click(chromedp.CSS(`form[action="/auth/logout"] button`)))
	waitLocation(t, ctx, testBase+"/")
	if body := text(); !strings.Contains(body, `"email":"ada@example.com"`) || mediation() != "conditional" {
		t.Fatalf("after autofill (%s) the upstream said: %s", mediation(), body)
	}

	// Without autofill, the button: a modal request.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: noAutofill}); err != nil {
		t.Fatal(err)
	}
	browse(t, ctx, chromedp.Navigate(testBase+"/auth/account"), chromedp.WaitVisible(chromedp.CSS(`form[action="/auth/logout"] button`)),
		chromedp.Click(chromedp.CSS(`form[action="/auth/logout"] button`)))
	waitLocation(t, ctx, testBase+"/auth/login?next=%2F")
	browse(t, ctx, chromedp.Navigate(testBase+"/auth/login?next=%2Freports%2F1"), chromedp.WaitVisible(chromedp.CSS("#passkey-button")))
	read(t, ctx, chromedp.Evaluate[bool](`sessionStorage.clear(), true`)) // forget the autofill
	browse(t, ctx, chromedp.Click(chromedp.CSS("#passkey-button")))
	waitLocation(t, ctx, testBase+"/reports/1")
	if body := text(); !strings.Contains(body, `"email":"ada@example.com"`) || mediation() != "modal" {
		t.Fatalf("after the button (%s) the upstream said: %s", mediation(), body)
	}
}
