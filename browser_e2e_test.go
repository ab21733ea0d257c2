package passwordless

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium starts a headless Chromium for the test, or skips saying why.
// In CI (.ci/run installs Debian's chromium) it must not skip.
func chromium(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := os.Getenv("CHROMIUM")
	if path == "" {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
			if p, err := exec.LookPath(name); err == nil {
				path = p
				break
			}
		}
	}
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium: .ci/run must install it")
		}
		t.Skip("no Chromium: install Debian's chromium (or set CHROMIUM) to run the browser test")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first action starts the browser, which lives as long as the
	// context of that call: it gets no timeout of its own.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}

// browse runs steps in the browser with a bound on how long they may take.
func browse(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// read runs one action that returns a value.
func read[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitLocation waits until the browser has navigated to url.
func waitLocation(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		loc := read(t, ctx, chromedp.Location())
		if loc == url {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the browser is at %s, not %s: %s", loc, url, read(t, ctx, chromedp.Evaluate[string](`document.body.innerText`)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBrowserSignInEndToEnd is the user's story in a real browser: a
// protected page sends them to sign in, they type their address and the
// code from the mail, and land on the page they asked for.
func TestBrowserSignInEndToEnd(t *testing.T) {
	ctx := chromium(t)
	e := newEnv(t, withEmailOption("link_base "+testBase))
	alias, code := chromedp.CSS("#alias"), chromedp.CSS("#code")

	browse(t, ctx, chromedp.Navigate(testBase+"/app/dashboard?tab=1"), chromedp.WaitVisible(alias))
	loc := read(t, ctx, chromedp.Location())
	label := read(t, ctx, chromedp.Text(chromedp.CSS("label[for=alias]")))
	if !strings.Contains(loc, "/auth/login?next=") || label != "Email address" {
		t.Fatalf("login page at %s, label %q", loc, label)
	}
	browse(t, ctx, chromedp.SendKeys(alias, "Reader@Example.com"), chromedp.Submit(alias), chromedp.WaitVisible(code))
	sent := e.smtp.code(t, "reader@example.com")

	browse(t, ctx, chromedp.SendKeys(code, sent), chromedp.Submit(code))
	waitLocation(t, ctx, testBase+"/app/dashboard?tab=1")
	if body := read(t, ctx, chromedp.Evaluate[string](`document.body.innerText`)); !strings.Contains(body, `"email":"reader@example.com"`) {
		t.Fatalf("after sign-in the upstream said: %s", body)
	}
	if cookies := read(t, ctx, chromedp.Evaluate[string](`document.cookie`)); cookies != "" {
		t.Fatalf("the session cookie is readable by scripts: %q", cookies)
	}

	// The sign-in link from a second mail fills the code in; the person
	// only confirms.
	clock.Advance(time.Minute)
	expectStatus(t, e.postForm("/auth/email", map[string]string{"email": "reader@example.com"}), 200)
	sent = e.smtp.code(t, "reader@example.com")
	browse(t, ctx, chromedp.Navigate(testBase+"/auth/login?alias=reader%40example.com#code="+sent), chromedp.WaitVisible(code))
	filled := read(t, ctx, chromedp.Value(code))
	loc = read(t, ctx, chromedp.Location())
	if filled != sent || strings.Contains(loc, sent) {
		t.Fatalf("link page: code field %q, location %s", filled, loc)
	}
	if shot := os.Getenv("PWL_SCREENSHOT"); shot != "" {
		os.WriteFile(shot, read(t, ctx, chromedp.FullScreenshot(100)), 0o644)
	}
	browse(t, ctx, chromedp.Submit(code))
	waitLocation(t, ctx, testBase+"/")
	if body := read(t, ctx, chromedp.Evaluate[string](`document.body.innerText`)); !strings.Contains(body, `"email":"reader@example.com"`) {
		t.Fatalf("after the link the upstream said: %s", body)
	}
}
