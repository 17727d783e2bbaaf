// Package docs holds the project's documentation; its test keeps the README
// short and every link of the README and docs/*.md pointing somewhere real.
package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// maxREADMELines: the README is read by a newcomer in five minutes; the
// rest belongs in docs/.
const maxREADMELines = 300

// pages are the Markdown files whose links are checked, relative to the
// repository root.
func pages(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"README.md"}
	for _, d := range docs {
		out = append(out, "docs/"+d)
	}
	return out
}

func TestREADMEIsShort(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), "\n"); n > maxREADMELines {
		t.Errorf("README.md has %d lines, more than %d: move the detail into docs/", n, maxREADMELines)
	}
}

// TestLinksResolve: every relative link of README.md and docs/*.md names a
// file or folder of the repository, and every #anchor a heading of its page
// as GitHub slugs it.
func TestLinksResolve(t *testing.T) {
	anchors := map[string]map[string]bool{} // page (from the root) → its anchors
	anchorsOf := func(page string) (map[string]bool, error) {
		if a, ok := anchors[page]; ok {
			return a, nil
		}
		raw, err := os.ReadFile(filepath.Join("..", page))
		if err != nil {
			return nil, err
		}
		anchors[page] = headingAnchors(string(raw))
		return anchors[page], nil
	}
	checked := 0
	for _, page := range pages(t) {
		raw, err := os.ReadFile(filepath.Join("..", page))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links(string(raw)) {
			checked++
			target, anchor, _ := strings.Cut(l.target, "#")
			file := page
			if target != "" {
				file = filepath.ToSlash(filepath.Join(filepath.Dir(page), target))
				if strings.HasPrefix(file, "../") {
					t.Errorf("%s:%d: %s leaves the repository", page, l.line, l.target)
					continue
				}
				if _, err := os.Stat(filepath.Join("..", file)); err != nil {
					t.Errorf("%s:%d: %s: no such file (%s)", page, l.line, l.target, file)
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(file, ".md") {
				t.Errorf("%s:%d: %s: an anchor into a file GitHub renders without headings", page, l.line, l.target)
				continue
			}
			a, err := anchorsOf(file)
			if err != nil {
				t.Errorf("%s:%d: %s: %v", page, l.line, l.target, err)
				continue
			}
			if !a[anchor] {
				t.Errorf("%s:%d: %s: %s has no heading with the anchor #%s", page, l.line, l.target, file, anchor)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no links found: the link pattern no longer matches the pages")
	}
}

type link struct {
	target string
	line   int
}

var (
	inlineLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	refLink    = regexp.MustCompile(`^\s*\[[^\]]+\]:\s*(\S+)`)
	codeSpan   = regexp.MustCompile("`+[^`]*`+")
	external   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`) // http:, https:, mailto:
)

// links returns the relative links of a Markdown page, outside code blocks
// and code spans.
func links(page string) []link {
	var out []link
	for i, line := range prose(page) {
		if line == "" {
			continue
		}
		line = codeSpan.ReplaceAllString(line, "")
		var targets []string
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			targets = append(targets, m[1])
		}
		if m := refLink.FindStringSubmatch(line); m != nil {
			targets = append(targets, m[1])
		}
		for _, t := range targets {
			t = strings.Trim(t, "<>")
			if !external.MatchString(t) {
				out = append(out, link{target: t, line: i + 1})
			}
		}
	}
	return out
}

// prose returns the page's lines with those inside fenced code blocks
// blanked, so line numbers stay those of the file.
func prose(page string) []string {
	lines := strings.Split(page, "\n")
	fence := ""
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		switch {
		case fence != "":
			if trimmed == fence { // a closing fence has no info string
				fence = ""
			}
			lines[i] = ""
		case strings.HasPrefix(trimmed, "```"), strings.HasPrefix(trimmed, "~~~"):
			fence = trimmed[:3]
			lines[i] = ""
		}
	}
	return lines
}

var (
	atxHeading = regexp.MustCompile(`^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
	linkText   = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
)

// headingAnchors returns the anchors GitHub gives a page's headings: the
// text without its Markdown, lower-cased, with punctuation dropped and
// spaces made hyphens; a repeated slug gets -1, -2, ...
func headingAnchors(page string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	for _, line := range prose(page) {
		m := atxHeading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := slug(m[1])
		if n := seen[s]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			anchors[s] = true
		}
		seen[s]++
	}
	return anchors
}

func slug(heading string) string {
	text := linkText.ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-', r == '_', unicode.IsLetter(r), unicode.IsNumber(r), unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestFencesClosed: a code fence left open (a closing fence run into the
// line before it) turns the rest of the page into code, its headings and
// links with it.
func TestFencesClosed(t *testing.T) {
	for _, page := range pages(t) {
		raw, err := os.ReadFile(filepath.Join("..", page))
		if err != nil {
			t.Fatal(err)
		}
		if line := openFence(string(raw)); line > 0 {
			t.Errorf("%s:%d: a code fence that is never closed", page, line)
		}
	}
}

// openFence returns the line of the fence left open at the end of page, or 0.
func openFence(page string) int {
	open := 0
	for i, line := range strings.Split(page, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case open > 0 && (trimmed == "```" || trimmed == "~~~"):
			open = 0
		case open == 0 && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")):
			open = i + 1
		}
	}
	return open
}

func TestSlug(t *testing.T) {
	for heading, want := range map[string]string{
		"Self-metrics (every exporter, every port)":         "self-metrics-every-exporter-every-port",
		"What `/metrics` caches, and why it is never stale": "what-metrics-caches-and-why-it-is-never-stale",
		"cpu (RAPL, port 9510)":                             "cpu-rapl-port-9510",
		"The [model](energy.md) & its limits":               "the-model--its-limits",
		"snake_case_name":                                   "snake_case_name",
	} {
		if got := slug(heading); got != want {
			t.Errorf("slug(%q) = %q, want %q", heading, got, want)
		}
	}
	got := headingAnchors("# A\n```\n# not a heading\n```\n## A\n### B #\n")
	for _, want := range []string{"a", "a-1", "b"} {
		if !got[want] {
			t.Errorf("anchors %v lack %q", got, want)
		}
	}
	if got["not-a-heading"] {
		t.Errorf("a line in a code block taken for a heading: %v", got)
	}
	if line := openFence("text\n```bash\nx```\n# h\n"); line != 2 {
		t.Errorf("openFence of a fence closed on its last line's end = %d, want 2", line)
	}
	if line := openFence("```\nx\n```\n"); line != 0 {
		t.Errorf("openFence of a closed fence = %d, want 0", line)
	}
}
