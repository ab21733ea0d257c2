package passwordless

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxBodyBytes bounds what an endpoint reads: nothing legitimate is larger.
const maxBodyBytes = 64 << 10

// apiError is an answer other than success: a status and a DRF-shaped body.
type apiError struct {
	status     int
	detail     string
	field      string // when set, the body also carries {field: [detail]}
	retryAfter time.Duration
	allow      string // for 405
	challenge  string // WWW-Authenticate, for 401
	// format and args, when set, made detail: the catalogs translate
	// format (see localize).
	format string
	args   []any
}

func (e *apiError) Error() string { return e.detail }

func badRequest(detail string) *apiError {
	return &apiError{status: http.StatusBadRequest, detail: detail}
}

func fieldError(field, detail string) *apiError {
	return &apiError{status: http.StatusBadRequest, detail: detail, field: field}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"detail":"Internal error."}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// Codes and tokens pass through these responses: no cache may keep them.
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, e *apiError) {
	body := map[string]any{"detail": e.detail}
	if e.field != "" {
		body[e.field] = []string{e.detail}
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(e.retryAfter))
	}
	if e.allow != "" {
		w.Header().Set("Allow", e.allow)
	}
	if e.challenge != "" {
		w.Header().Set("WWW-Authenticate", e.challenge)
	}
	writeJSON(w, e.status, body)
}

// retryAfterSeconds is d in whole seconds, rounded up, so a client that
// waits that long is let in.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// readFields reads a JSON, form-encoded or multipart body into string
// fields. Only the fields named in allowed may appear; every value must be
// a string of valid UTF-8 without NUL bytes.
func readFields(w http.ResponseWriter, r *http.Request, allowed ...string) (map[string]string, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiError{status: http.StatusRequestEntityTooLarge, detail: fmt.Sprintf("The request body is larger than %d KiB.", maxBodyBytes>>10),
				format: "The request body is larger than %d KiB.", args: []any{maxBodyBytes >> 10}}
		}
		return nil, badRequest("The request body could not be read.")
	}
	fields := map[string]string{}
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case len(bytes.TrimSpace(body)) == 0:
	case ct == "application/json" || strings.HasSuffix(ct, "+json") || (ct == "" && bytes.HasPrefix(bytes.TrimSpace(body), []byte("{"))):
		if !utf8.Valid(body) {
			return nil, badRequest("The request body is not valid UTF-8.")
		}
		var raw map[string]any
		dec := json.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&raw); err != nil || dec.More() {
			return nil, badRequest("The request body is not a JSON object.")
		}
		for k, v := range raw {
			if v == nil && isAllowed(k, allowed) {
				continue // clients often send the alias they do not use as null
			}
			s, ok := v.(string)
			if !ok {
				if !isAllowed(k, allowed) {
					return nil, fieldError(k, "Unknown field.")
				}
				return nil, fieldError(k, "Not a valid string.")
			}
			fields[k] = s
		}
	case ct == "application/x-www-form-urlencoded" || ct == "":
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, badRequest("The form body could not be parsed.")
		}
		if err := collect(fields, vals); err != nil {
			return nil, err
		}
	case ct == "multipart/form-data":
		form, err := multipart.NewReader(bytes.NewReader(body), params["boundary"]).ReadForm(maxBodyBytes)
		if err != nil {
			return nil, badRequest("The multipart body could not be parsed.")
		}
		defer form.RemoveAll()
		if len(form.File) > 0 {
			return nil, badRequest("Files are not accepted.")
		}
		if err := collect(fields, form.Value); err != nil {
			return nil, err
		}
	default:
		return nil, &apiError{status: http.StatusUnsupportedMediaType, detail: fmt.Sprintf("Unsupported media type %q: send JSON or a form.", ct),
			format: "Unsupported media type %q: send JSON or a form.", args: []any{ct}}
	}
	for k, v := range fields {
		if !isAllowed(k, allowed) {
			return nil, fieldError(k, "Unknown field.")
		}
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return nil, fieldError(k, "The value contains invalid characters.")
		}
	}
	return fields, nil
}

func collect(fields map[string]string, vals map[string][]string) *apiError {
	for k, vs := range vals {
		if len(vs) != 1 {
			return fieldError(k, "Give this field once.")
		}
		fields[k] = vs[0]
	}
	return nil
}

func isAllowed(k string, allowed []string) bool {
	for _, a := range allowed {
		if a == k {
			return true
		}
	}
	return false
}
