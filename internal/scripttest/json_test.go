package scripttest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// json FILE EXPR [WANT]
//
// Evaluates EXPR on the JSON document in FILE ("stdout" and "stderr" name
// the last command's output). Without WANT it prints the value, strings
// unquoted, and `! json` passes only if EXPR selects nothing. With WANT it
// passes if the value equals WANT, and `! json` if it does not (or if EXPR
// selects nothing). EXPR is a small jq subset: `.`, `.field`, `[N]`,
// `[field=value]` (the first array element whose field prints as value),
// `[field!=value]` (the first whose field does not), chained, and a final
// `|length`; e.g. `.[0].digest`, `.|length`,
// `.[reference=docker.io/library/debian:bookworm-slim].rootfs`, and
// `! json stdout '.[digest!=sha256:...]'` for "every element has that digest".
func cmdJSON(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "json FILE EXPR [WANT]"
	if len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: %s", usage)
	}
	var doc any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &doc); err != nil {
		ts.Fatalf("%s is not JSON: %v", args[0], err)
	}
	v, err := evalJSON(doc, args[1])
	var syntax *jsonSyntaxError
	if errors.As(err, &syntax) {
		ts.Fatalf("%v\nusage: %s", err, usage)
	}
	got := ""
	if err == nil {
		got = jsonString(v)
	}
	switch {
	case len(args) == 2 && neg && err == nil:
		ts.Fatalf("%s selects %s in %s, want nothing", args[1], got, args[0])
	case len(args) == 2 && !neg && err != nil:
		ts.Fatalf("%s: %v", args[0], err)
	case len(args) == 2:
		if err == nil {
			fmt.Fprintln(ts.Stdout(), got)
		}
	case neg && err == nil && got == args[2]:
		ts.Fatalf("%s of %s is %s, want anything else", args[1], args[0], got)
	case !neg && err != nil:
		ts.Fatalf("%s: %v", args[0], err)
	case !neg && got != args[2]:
		ts.Fatalf("%s of %s is %q, want %q", args[1], args[0], got, args[2])
	}
}

type jsonSyntaxError struct{ expr, msg string }

func (e *jsonSyntaxError) Error() string { return fmt.Sprintf("bad EXPR %q: %s", e.expr, e.msg) }

func evalJSON(v any, expr string) (any, error) {
	p, ok := strings.CutPrefix(expr, ".")
	if !ok {
		return nil, &jsonSyntaxError{expr, "must start with ."}
	}
	p, length := strings.CutSuffix(p, "|length")
	for p != "" {
		switch {
		case p[0] == '.':
			p = p[1:]
		case p[0] == '[':
			end := strings.IndexByte(p, ']')
			if end < 0 {
				return nil, &jsonSyntaxError{expr, "unclosed ["}
			}
			inner := p[1:end]
			p = p[end+1:]
			arr, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("[%s] applied to %s, not an array", inner, jsonString(v))
			}
			if n, err := strconv.Atoi(inner); err == nil {
				if n < 0 || n >= len(arr) {
					return nil, fmt.Errorf("index %d out of range: the array has %d elements", n, len(arr))
				}
				v = arr[n]
				continue
			}
			key, want, ok := strings.Cut(inner, "=")
			if !ok {
				return nil, &jsonSyntaxError{expr, "want [N], [field=value] or [field!=value]"}
			}
			key, differ := strings.CutSuffix(key, "!")
			found := false
			for _, el := range arr {
				if obj, ok := el.(map[string]any); ok && obj[key] != nil && (jsonString(obj[key]) == want) != differ {
					v, found = el, true
					break
				}
			}
			if !found {
				return nil, fmt.Errorf("no element with %s", inner)
			}
		default:
			end := strings.IndexAny(p, ".[")
			if end < 0 {
				end = len(p)
			}
			field := p[:end]
			p = p[end:]
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf(".%s applied to %s, not an object", field, jsonString(v))
			}
			if v, ok = obj[field]; !ok {
				return nil, fmt.Errorf("no field %q", field)
			}
		}
	}
	if length {
		switch x := v.(type) {
		case []any:
			return float64(len(x)), nil
		case map[string]any:
			return float64(len(x)), nil
		case string:
			return float64(len(x)), nil
		default:
			return nil, fmt.Errorf("|length of %s, which is no array, object or string", jsonString(v))
		}
	}
	return v, nil
}

func jsonString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	data, _ := json.Marshal(v)
	return string(data)
}

// setenv VAR FILE
//
// Sets VAR to the content of FILE ("stdout" for the last command's output),
// which must be one non-empty line.
func cmdSetenv(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: setenv VAR FILE")
	}
	v := strings.TrimSuffix(ts.ReadFile(args[1]), "\n")
	if v == "" || strings.Contains(v, "\n") {
		ts.Fatalf("setenv %s: %s must be one non-empty line, is %q", args[0], args[1], v)
	}
	ts.Setenv(args[0], v)
}

func TestEvalJSON(t *testing.T) {
	var doc any
	if err := json.Unmarshal([]byte(`[{"reference":"a","digest":"sha256:1","size":170000000,"tags":["x"]},{"reference":"b","digest":"sha256:2","size":3}]`), &doc); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ expr, want, err string }{
		{".|length", "2", ""},
		{".[0].reference", "a", ""},
		{".[1].size", "3", ""},
		{".[0].size", "170000000", ""},
		{".[0].tags", `["x"]`, ""},
		{".[0].tags|length", "1", ""},
		{".[reference=b].digest", "sha256:2", ""},
		{".[digest!=sha256:1].reference", "b", ""},
		{".[reference=c]", "", "no element with reference=c"},
		{".[2]", "", "index 2 out of range: the array has 2 elements"},
		{".[0].nope", "", `no field "nope"`},
		{".reference", "", "not an object"},
		{".[0].reference|length", "1", ""},
		{"[0]", "", "must start with ."},
		{".[0", "", "unclosed ["},
		{".[x]", "", "want [N]"},
	} {
		v, err := evalJSON(doc, tt.expr)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want %q", tt.expr, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.expr, err)
		case tt.err == "" && jsonString(v) != tt.want:
			t.Errorf("%s = %s, want %s", tt.expr, jsonString(v), tt.want)
		}
	}
}
