package passwordless

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"golang.org/x/text/language"
)

// The pages a person sees (sign-in, code entry and link confirmation, the
// 403 page, the 429/503/expired-link pages) share one layout and speak the
// language of the request. Templates and message catalogs are parsed once,
// at provision; a request only picks a language and executes.

//go:embed pages
var builtinPages embed.FS

// pageNames are the pages a templates directory may replace, one file each.
var pageNames = []string{"login", "forbidden", "problem", "account"}

// builtinLanguages are the languages with a complete built-in catalog, in
// the order offered when the Caddyfile does not say.
var builtinLanguages = []string{"en", "de", "fr", "es", "pt-BR", "it", "nl", "ja"}

// catalogs holds the built-in messages, by language, by key. Page strings
// have dotted keys (login.title); API messages are keyed by their English
// text, so a detail without a translation stays as it always was.
var catalogs = func() map[string]map[string]string {
	c := make(map[string]map[string]string)
	for _, lang := range builtinLanguages {
		b, err := builtinPages.ReadFile("pages/lang/" + lang + ".json")
		if err != nil {
			panic(err)
		}
		m := make(map[string]string)
		if err := json.Unmarshal(b, &m); err != nil {
			panic(fmt.Sprintf("pages/lang/%s.json: %v", lang, err))
		}
		c[lang] = m
	}
	return c
}()

// BrandingConfig makes the pages look like the site and chooses the
// languages they speak.
type BrandingConfig struct {
	// The site's name: shown above every page, in page titles and in the
	// sign-in heading. Default: none (the pages say "Sign in").
	Name string `json:"name,omitempty"`

	// A logo shown above the pages: an https URL, or a path on this site
	// such as `/static/logo.svg`.
	Logo string `json:"logo,omitempty"`

	// Accent colour of buttons and links, as `#rgb` or `#rrggbb` (in a
	// Caddyfile quoted, `"#0b5fff"`, or without the `#`). White
	// text must be readable on it: a colour whose contrast with white is
	// below 4.5:1 (WCAG AA) is refused. Default: `#1a5fb4`.
	Color string `json:"color,omitempty"`

	// A directory of own templates by page name: `layout.html`,
	// `login.html`, `forbidden.html`, `problem.html`, `account.html`. A page without its
	// file uses the built-in one. They are Go html/template files, parsed
	// at start: a broken one stops Caddy, naming file and line.
	Templates string `json:"templates,omitempty"`

	// Languages the pages and messages may speak, among en, de, fr, es,
	// pt-BR, it, nl, ja. Default: all of them.
	Languages []string `json:"languages,omitempty"`

	// The language when the request asks for none of the offered ones
	// (and for API clients that send no Accept-Language). Default: `en`.
	DefaultLanguage string `json:"default_language,omitempty"`
}

const defaultAccent = "#1a5fb4"

// unmarshal reads a branding block; each value is checked here so that an
// error names its line.
func (b *BrandingConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "name":
			if err := oneArg(d, &b.Name); err != nil {
				return err
			}
		case "logo":
			if err := oneArg(d, &b.Logo); err != nil {
				return err
			}
			if err := checkLogo(b.Logo); err != nil {
				return d.Errf("logo: %v", err)
			}
		case "color":
			if !d.NextArg() {
				// The usual mistake: an unquoted #0b5fff is a comment.
				return d.Err(`color needs a value such as "#0b5fff" (quoted: in a Caddyfile an unquoted # starts a comment) or 0b5fff`)
			}
			b.Color = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
			if !strings.HasPrefix(b.Color, "#") {
				b.Color = "#" + b.Color
			}
			if err := checkAccent(b.Color); err != nil {
				return d.Errf("color: %v", err)
			}
		case "templates":
			if err := oneArg(d, &b.Templates); err != nil {
				return err
			}
		case "languages":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for i, a := range args {
				lang, err := builtinLanguage(a)
				if err != nil {
					return d.Errf("languages: %v", err)
				}
				args[i] = lang
			}
			b.Languages = append(b.Languages, args...)
		case "default_language":
			if err := oneArg(d, &b.DefaultLanguage); err != nil {
				return err
			}
			lang, err := builtinLanguage(b.DefaultLanguage)
			if err != nil {
				return d.Errf("default_language: %v", err)
			}
			b.DefaultLanguage = lang
		default:
			return d.Errf("unrecognized branding option %q", d.Val())
		}
	}
	if err := b.checkLanguages(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// builtinLanguage returns the catalog name of a language tag, however it
// is spelt (pt-br, pt_BR).
func builtinLanguage(s string) (string, error) {
	for _, l := range builtinLanguages {
		if strings.EqualFold(strings.ReplaceAll(s, "_", "-"), l) {
			return l, nil
		}
	}
	return "", fmt.Errorf("%q is not a built-in language (%s)", s, strings.Join(builtinLanguages, ", "))
}

func (b *BrandingConfig) checkLanguages() error {
	if b.DefaultLanguage != "" && len(b.Languages) > 0 {
		for _, l := range b.Languages {
			if l == b.DefaultLanguage {
				return nil
			}
		}
		return fmt.Errorf("default_language %s is not among languages %s", b.DefaultLanguage, strings.Join(b.Languages, " "))
	}
	return nil
}

// validLogoHost is a host name and port, nothing else: the host goes into
// the pages' Content-Security-Policy, where a ';' would add a directive.
var validLogoHost = regexp.MustCompile(`^[A-Za-z0-9.-]+(:[0-9]{1,5})?$`)

// checkLogo admits an https URL or a path on this site; anything else
// (http, data: or javascript: URLs, //host) could load from elsewhere or
// run script.
func checkLogo(s string) error {
	if strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "//") && !strings.ContainsAny(s, "\\ \"'<>") {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || !validLogoHost.MatchString(u.Host) || u.User != nil {
		return fmt.Errorf("%q must be an https URL or a path on this site such as /static/logo.svg", s)
	}
	return nil
}

// parseColor reads #rgb or #rrggbb.
func parseColor(s string) ([3]float64, error) {
	var c [3]float64
	h := strings.TrimPrefix(s, "#")
	if len(h) == 3 {
		h = string([]byte{h[0], h[0], h[1], h[1], h[2], h[2]})
	}
	if !strings.HasPrefix(s, "#") || len(h) != 6 {
		return c, fmt.Errorf("%q is not a colour like #0b5fff", s)
	}
	for i := range c {
		v, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		if err != nil {
			return c, fmt.Errorf("%q is not a colour like #0b5fff", s)
		}
		c[i] = float64(v)
	}
	return c, nil
}

// luminance is WCAG 2.1's relative luminance.
func luminance(c [3]float64) float64 {
	var l [3]float64
	for i, v := range c {
		v /= 255
		if v <= 0.04045 {
			l[i] = v / 12.92
		} else {
			l[i] = math.Pow((v+0.055)/1.055, 2.4)
		}
	}
	return 0.2126*l[0] + 0.7152*l[1] + 0.0722*l[2]
}

func contrast(a, b [3]float64) float64 {
	la, lb := luminance(a), luminance(b)
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

var white = [3]float64{255, 255, 255}

// checkAccent refuses an accent on which white button text would fail
// WCAG AA (4.5:1).
func checkAccent(s string) error {
	c, err := parseColor(s)
	if err != nil {
		return err
	}
	if r := contrast(c, white); r < 4.5 {
		return fmt.Errorf("%s has a contrast of %.2f:1 with white text, below the 4.5:1 that WCAG AA asks for; choose a darker colour", s, r)
	}
	return nil
}

// darkCard is the card colour of the dark theme (layout.html's --card).
var darkCard = [3]float64{0x1e, 0x1f, 0x23}

// readableOn lightens c toward white until it reads on bg at 4.5:1: links
// and focus rings keep the accent's hue in the dark theme.
func readableOn(c, bg [3]float64) string {
	for t := 0.0; t <= 1; t += 0.05 {
		var m [3]float64
		for i := range m {
			m[i] = math.Round(c[i] + (255-c[i])*t)
		}
		if contrast(m, bg) >= 4.6 {
			c = m
			break
		}
	}
	return fmt.Sprintf("#%02x%02x%02x", int(c[0]), int(c[1]), int(c[2]))
}

// pageSet is what provision makes of the branding: parsed templates, the
// offered languages and their matcher.
type pageSet struct {
	site, logo     string
	accent         string
	accentTextDark string
	imgSrc         string // the CSP's img-src
	templates      map[string]*template.Template
	offered        []string // catalog names, default first
	matcher        language.Matcher
}

// provision checks the branding (again, for JSON configs) and parses the
// templates; b may be nil.
func (b *BrandingConfig) provision(env func(*string)) (*pageSet, error) {
	if b == nil {
		b = new(BrandingConfig)
	}
	env(&b.Name)
	env(&b.Logo)
	env(&b.Templates)
	if strings.ContainsAny(b.Name, "\r\n") {
		// It goes into the Subject header of every code's mail.
		return nil, errors.New("name must be one line")
	}
	ps := &pageSet{site: b.Name, logo: b.Logo, accent: b.Color, imgSrc: "'none'"}
	if ps.accent == "" {
		ps.accent = defaultAccent
	}
	if err := checkAccent(ps.accent); err != nil {
		return nil, fmt.Errorf("color: %w", err)
	}
	c, _ := parseColor(ps.accent)
	ps.accentTextDark = readableOn(c, darkCard)
	if b.Logo != "" {
		if err := checkLogo(b.Logo); err != nil {
			return nil, fmt.Errorf("logo: %w", err)
		}
		ps.imgSrc = "'self'"
		if u, err := url.Parse(b.Logo); err == nil && u.Host != "" {
			ps.imgSrc = "https://" + u.Host
		}
	}
	def := "en"
	if b.DefaultLanguage != "" {
		var err error
		if def, err = builtinLanguage(b.DefaultLanguage); err != nil {
			return nil, fmt.Errorf("default_language: %w", err)
		}
	}
	langs := b.Languages
	if len(langs) == 0 {
		langs = builtinLanguages
	}
	ps.offered = []string{def}
	for _, l := range langs {
		l, err := builtinLanguage(l)
		if err != nil {
			return nil, fmt.Errorf("languages: %w", err)
		}
		if l != def {
			ps.offered = append(ps.offered, l)
		}
	}
	if err := b.checkLanguages(); err != nil {
		return nil, err
	}
	// The matcher's first tag is its fallback: the default language.
	tags := make([]language.Tag, len(ps.offered))
	for i, l := range ps.offered {
		tags[i] = language.MustParse(l)
	}
	ps.matcher = language.NewMatcher(tags)
	var err error
	if ps.templates, err = parsePages(b.Templates); err != nil {
		return nil, err
	}
	return ps, nil
}

// parsePages parses each page with the layout, the site's own files first
// and the built-in ones for what they do not replace. Templates are named
// by their file, so a parse error names file and line.
func parsePages(dir string) (map[string]*template.Template, error) {
	source := func(name string) (string, string, error) {
		if dir != "" {
			file := filepath.Join(dir, name+".html")
			b, err := os.ReadFile(file)
			if err == nil {
				return file, string(b), nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return "", "", fmt.Errorf("templates: %w", err)
			}
		}
		b, err := builtinPages.ReadFile(path.Join("pages", name+".html"))
		return "pages/" + name + ".html", string(b), err
	}
	if dir != "" {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("templates: %s is not a readable directory", dir)
		}
	}
	layoutFile, layout, err := source("layout")
	if err != nil {
		return nil, err
	}
	out := make(map[string]*template.Template)
	for _, name := range pageNames {
		t, err := template.New(layoutFile).Parse(layout)
		if err != nil {
			return nil, fmt.Errorf("templates: %w", err)
		}
		if t.Lookup("layout") == nil {
			return nil, fmt.Errorf("templates: %s does not define \"layout\"", layoutFile)
		}
		file, src, err := source(name)
		if err != nil {
			return nil, err
		}
		if _, err := t.New(file).Parse(src); err != nil {
			return nil, fmt.Errorf("templates: %w", err)
		}
		out[name] = t
	}
	return out, nil
}

// language picks the language of a request: a `lang` query parameter
// naming an offered language, else the best match of Accept-Language, else
// the default. fromQuery says whether links and forms must carry it on.
func (ps *pageSet) language(r *http.Request) (lang string, fromQuery bool) {
	if q := r.URL.Query().Get("lang"); q != "" {
		if l, err := builtinLanguage(q); err == nil && ps.offers(l) {
			return l, true
		}
	}
	if al := r.Header.Get("Accept-Language"); al != "" {
		tags, _, err := language.ParseAcceptLanguage(al)
		if err == nil && len(tags) > 0 {
			if _, i, conf := ps.matcher.Match(tags...); conf != language.No {
				return ps.offered[i], false
			}
		}
	}
	return ps.offered[0], false
}

func (ps *pageSet) offers(lang string) bool {
	for _, l := range ps.offered {
		if l == lang {
			return true
		}
	}
	return false
}

// message is a catalog entry in lang, with English as the fallback for a
// key a catalog lacks (the catalog test keeps that from happening).
func message(lang, key string, args ...any) string {
	s, ok := catalogs[lang][key]
	if !ok {
		if s, ok = catalogs["en"][key]; !ok {
			s = key
		}
	}
	if len(args) > 0 {
		return fmt.Sprintf(s, args...)
	}
	return s
}

// localize returns e with its detail in the request's language; keys and
// status stay as they are.
func (ps *pageSet) localize(r *http.Request, e *apiError) *apiError {
	lang, _ := ps.language(r)
	if lang == "en" {
		return e
	}
	key := e.detail
	if e.format != "" {
		key = e.format
	}
	if _, ok := catalogs[lang][key]; !ok {
		return e
	}
	out := *e
	out.detail = message(lang, key, e.args...)
	return &out
}

// translate is an API message in the request's language.
func (ps *pageSet) translate(r *http.Request, english string) string {
	lang, _ := ps.language(r)
	return message(lang, english)
}

// pageView is what every page template receives. Own templates may use
// any of it; .T "key" args… gives a message in the page's language.
type pageView struct {
	Lang      string // the page's language, a BCP 47 tag
	LangQuery string // the `lang` parameter, when it chose the language: links and forms keep it
	Nonce     string
	Site      string // branding name
	Logo      string

	Accent, AccentText, AccentTextDark string

	// The sign-in page.
	Step       string // "alias" or "code"
	Action     string
	Next       string
	Alias      string
	AliasKind  string // "email", "mobile" or "any": what the form asks for
	CodeLength int
	Error      string
	Info       string
	Passkey    passkeyPage

	// The account page; Action and Next are its sign-out form's.
	Prefix        string
	Email, Mobile string
	Passkeys      bool // whether passkeys are on
	List          []accountPasskey
	Script        template.JS

	// The 403 page.
	Who string

	// A problem page: "limited", "unavailable" or "expired"; Again is
	// where its button leads.
	Problem string
	Again   string
}

// T is a message of the page's language.
func (v *pageView) T(key string, args ...any) string { return message(v.Lang, key, args...) }

// view starts the page view of a request.
func (ps *pageSet) view(r *http.Request) pageView {
	lang, fromQuery := ps.language(r)
	v := pageView{Lang: lang, Site: ps.site, Logo: ps.logo, Accent: ps.accent, AccentText: ps.accent, AccentTextDark: ps.accentTextDark}
	if fromQuery {
		v.LangQuery = lang
	}
	return v
}

// withLang adds the page's lang parameter to a same-site link.
func (v *pageView) withLang(link string) string {
	if v.LangQuery == "" {
		return link
	}
	sep := "?"
	if strings.Contains(link, "?") {
		sep = "&"
	}
	return link + sep + "lang=" + url.QueryEscape(v.LangQuery)
}

// render writes a page with the headers every page carries.
func (ps *pageSet) render(w http.ResponseWriter, status int, page string, v pageView, csp string) error {
	nonce, err := randomID()
	if err != nil {
		return fmt.Errorf("generating nonce: %w", err)
	}
	v.Nonce = nonce
	var b bytes.Buffer
	if err := ps.templates[page].ExecuteTemplate(&b, "layout", &v); err != nil {
		return fmt.Errorf("rendering %s page: %w", page, err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Language", v.Lang)
	h.Add("Vary", "Accept-Language")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; script-src 'nonce-"+nonce+"'; img-src "+ps.imgSrc+"; "+csp+"frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	w.Write(b.Bytes())
	return nil
}
