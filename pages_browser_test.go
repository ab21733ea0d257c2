package passwordless

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// axeSource is axe-core's script, from the npm package that .ci/run
// installs into .ci/node (or PWL_AXE), or the test skips saying why. In
// CI it must not skip.
func axeSource(t *testing.T) string {
	t.Helper()
	path := os.Getenv("PWL_AXE")
	if path == "" {
		path = filepath.Join(".ci", "node", "node_modules", "axe-core", "axe.min.js")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no axe-core at %s: .ci/run must install it (npm ci --prefix .ci/node)", path)
		}
		t.Skipf("no axe-core at %s: run `npm ci --prefix .ci/node` (or set PWL_AXE) to run the accessibility audit", path)
	}
	return string(b)
}

// colorScheme emulates prefers-color-scheme.
func colorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
		return err
	})
}

type axeViolation struct {
	ID, Impact, Help string
	Nodes            []struct {
		Target         []any
		FailureSummary string
	}
}

// audit runs axe-core's WCAG 2.1 A and AA rules on the page in the browser
// and fails the test with each violation, readably, when there are any.
func audit(t *testing.T, ctx context.Context, axe, name string) {
	t.Helper()
	browse(t, ctx, chromedp.Evaluate[chromedp.Void](axe))
	out := read(t, ctx, chromedp.Evaluate[string](`axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}, resultTypes: ["violations"]}).then(r => JSON.stringify(r.violations))`, chromedp.EvalAwaitPromise))
	var vs []axeViolation
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		t.Fatalf("%s: axe answered %q: %v", name, out, err)
	}
	for _, v := range vs {
		var b strings.Builder
		for _, n := range v.Nodes {
			fmt.Fprintf(&b, "\n    at %v: %s", n.Target, strings.ReplaceAll(n.FailureSummary, "\n", "\n      "))
		}
		t.Errorf("%s: %s (%s): %s%s", name, v.ID, v.Impact, v.Help, b.String())
	}
}

// noHorizontalScroll checks that the page fits a 320 px wide screen.
func noHorizontalScroll(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	w := read(t, ctx, chromedp.Evaluate[[]int](`[document.documentElement.scrollWidth, document.documentElement.clientWidth]`))
	if len(w) != 2 || w[0] > w[1] {
		t.Errorf("%s: scrolls sideways at 320 px: content %v px wide", name, w)
	}
}

// TestPagesAccessible opens every page a person sees in Chromium, in light
// and dark mode, at desktop width and at 320 px: axe-core finds no WCAG
// 2.1 AA violation, nothing scrolls sideways, and dark mode changes the
// colours.
func TestPagesAccessible(t *testing.T) {
	axe := axeSource(t)
	ctx := chromium(t)
	e := newEnv(t, withEmailOption("link_base "+testBase), withConfig(`protect /admin/* {
		role admin
	}
	protect /*
	`+passkeysBlock+`
	branding {
		name "Example"
		color "#0b5fff"
	}`))
	alias, code := chromedp.CSS("#alias"), chromedp.CSS("#code")
	colours := `[getComputedStyle(document.body).backgroundColor, getComputedStyle(document.querySelector("main")).color, getComputedStyle(document.querySelector("main")).backgroundColor].join(" ")`

	// check audits the page the browser shows in every mode.
	check := func(name string) {
		t.Helper()
		browse(t, ctx, colorScheme("light"), chromedp.EmulateViewport(1280, 800))
		light := read(t, ctx, chromedp.Evaluate[string](colours))
		audit(t, ctx, axe, name+", light")
		browse(t, ctx, colorScheme("dark"))
		dark := read(t, ctx, chromedp.Evaluate[string](colours))
		if dark == light {
			t.Errorf("%s: dark mode changes no colour: %s", name, light)
		}
		audit(t, ctx, axe, name+", dark")
		browse(t, ctx, chromedp.EmulateViewport(320, 640, chromedp.EmulateMobile))
		noHorizontalScroll(t, ctx, name)
		audit(t, ctx, axe, name+", dark, 320 px")
		browse(t, ctx, colorScheme("light"))
		audit(t, ctx, axe, name+", light, 320 px")
		browse(t, ctx, chromedp.EmulateViewport(1280, 800))
	}

	browse(t, ctx, chromedp.Navigate(testBase+"/app?x=1"), chromedp.WaitVisible(alias))
	check("sign-in")
	browse(t, ctx, chromedp.SendKeys(alias, "a-rather-long-address.for-testing@subdomain.example.com"), chromedp.Submit(alias), chromedp.WaitVisible(code))
	check("code step")
	sent := e.smtp.code(t, "a-rather-long-address.for-testing@subdomain.example.com")

	// Asking again at once is limited.
	browse(t, ctx, chromedp.Navigate(testBase+"/auth/login?lang=ja"), chromedp.WaitVisible(alias),
		chromedp.SendKeys(alias, "a-rather-long-address.for-testing@subdomain.example.com"), chromedp.Submit(alias), chromedp.WaitVisible(chromedp.CSS("a.button")))
	if lang := read(t, ctx, chromedp.Evaluate[string](`document.documentElement.lang`)); lang != "ja" {
		t.Errorf("the 429 page is in %q", lang)
	}
	check("429 page, Japanese")

	// A link whose code is spent.
	wrong := "000000"
	if sent == wrong {
		wrong = "111111"
	}
	browse(t, ctx, chromedp.Navigate(testBase+"/auth/login?alias=a-rather-long-address.for-testing%40subdomain.example.com#code="+wrong), chromedp.WaitVisible(code), chromedp.Submit(code), chromedp.WaitVisible(chromedp.CSS("a.button")))
	check("spent link page")

	// Signed in, and a page the rules keep from this user.
	browse(t, ctx, chromedp.Navigate(testBase+"/auth/login?alias=a-rather-long-address.for-testing%40subdomain.example.com#code="+sent), chromedp.WaitVisible(code), chromedp.Submit(code))
	waitLocation(t, ctx, testBase+"/")
	browse(t, ctx, chromedp.Navigate(testBase+"/admin/panel"), chromedp.WaitVisible(chromedp.CSS("main button")))
	check("403 page")
	browse(t, ctx, chromedp.Navigate(testBase+"/auth/account?lang=de"), chromedp.WaitVisible(chromedp.CSS("main h1")))
	check("account page, German")
	clock.Advance(time.Minute)
}

// TestScreenshots takes the README's pictures of the sign-in page, light
// and dark, when PWL_SCREENSHOTS names a directory: ./screenshots.sh.
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("PWL_SCREENSHOTS")
	if dir == "" {
		t.Skip("set PWL_SCREENSHOTS to a directory (./screenshots.sh does) to take the README's screenshots")
	}
	ctx := chromium(t)
	newEnv(t, withConfig(`branding {
		name "Example"
	}`))
	for _, scheme := range []string{"light", "dark"} {
		browse(t, ctx, colorScheme(scheme), chromedp.EmulateViewport(480, 560),
			chromedp.Navigate(testBase+"/auth/login?next=/"), chromedp.WaitVisible(chromedp.CSS("#alias")),
			chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
		png := read(t, ctx, chromedp.CaptureScreenshot())
		if err := os.WriteFile(filepath.Join(dir, "signin-"+scheme+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
