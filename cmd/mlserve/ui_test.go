package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mlserve/mlserve/internal/testenv"
)

// The web page's tests drive Debian's Chromium, headless, with chromedp:
// one browser for all of them, on the library of TestLibrary. Each page
// is saved as a screenshot under .artifacts/screenshots/ (git-ignored).

// browser is one headless Chromium tab.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := testenv.Chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // the tests run as root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", exe, err)
	}
	shots := filepath.Join(testenv.Root(), ".artifacts", "screenshots")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, ctx: ctx, shots: shots}
}

// do runs steps, failing the test on an error.
func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v\npage: %s", err, b.pageText())
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v\npage: %s", expr, err, b.pageText())
	}
	return v
}

// wait waits until the JavaScript expression is true.
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 25*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+expr+")", chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		b.t.Fatalf("waiting for %s: %v\npage: %s", what, err, b.pageText())
	}
}

// route shows a view of the page already loaded.
func (b *browser) route(hash string) {
	b.t.Helper()
	eval[string](b, "location.hash = "+strconv.Quote(hash))
}

// pageText is what the page shows, for failure messages.
func (b *browser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

// shot saves a screenshot of the whole page.
func (b *browser) shot(name string) {
	b.t.Helper()
	// Let the last images fade in.
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(b.shots, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}

// checkA11y checks what the keyboard and screen readers need on the view
// shown: every visible field has a label, every image an alt text (empty
// for decoration), every button a name, and nothing is focusable without
// being visible.
func (b *browser) checkA11y(view string) {
	b.t.Helper()
	problems := eval[[]string](b, `(() => {
		const out = [];
		const shown = (e) => !e.closest('[hidden],[aria-hidden="true"]');
		for (const e of document.querySelectorAll('input, select, textarea')) {
			if (shown(e) && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')) out.push('field without a label: #' + e.id);
		}
		for (const e of document.querySelectorAll('img')) if (!e.hasAttribute('alt')) out.push('image without alt: ' + e.src);
		for (const e of document.querySelectorAll('button, a[href]')) {
			if (shown(e) && !(e.textContent.trim() || e.getAttribute('aria-label'))) out.push('unnamed ' + e.tagName + ': ' + e.outerHTML.slice(0, 80));
		}
		return out;
	})()`)
	if len(problems) > 0 {
		b.t.Fatalf("%s: %s", view, strings.Join(problems, "; "))
	}
}

// imagesLoaded is true when the selector matches n images (at least n
// when n < 0: at least -n), all loaded.
func imagesLoaded(sel string, n int) string {
	cmp := "=== " + strconv.Itoa(n)
	if n < 0 {
		cmp = ">= " + strconv.Itoa(-n)
	}
	return fmt.Sprintf(`(() => { const imgs = [...document.querySelectorAll(%q)];
		return imgs.length %s && imgs.every(i => i.complete && i.naturalWidth > 0); })()`, sel, cmp)
}

func testBrowser(t *testing.T, l *library) {
	b := newBrowser(t)
	start := time.Now()
	ui := l.base + "/ui/"

	t.Run("search shows thumbnails", func(t *testing.T) {
		b.t = t
		b.do(chromedp.Navigate(ui + "#/search?q=" + "people%20at%20a%20table"))
		b.wait("six results with their thumbnails", imagesLoaded("#results img", 6))
		if info := eval[string](b, `document.getElementById('search-info').textContent`); !strings.Contains(info, "6 photos") {
			t.Fatalf("info %q", info)
		}
		b.checkA11y("search")
		b.shot("search.png")
		// Enter in the search box runs a new search (the keyboard alone).
		eval[string](b, `document.getElementById('q').value = ''`)
		b.do(chromedp.SendKeys(chromedp.CSS("#q"), "a lighthouse\r"))
		b.wait("the new query in the address", `decodeURIComponent(location.hash) === '#/search?q=a lighthouse'`)
		b.wait("its results", imagesLoaded("#results img", 6))
		// A result opens larger; "Find similar photos" searches by it.
		name := eval[string](b, `document.querySelector('#results li .path').textContent`)
		b.do(chromedp.Click(chromedp.CSS("#results li button.thumb")))
		b.wait("the viewer", `document.querySelector('dialog[open]') !== null && `+imagesLoaded("dialog[open] img", 1))
		b.checkA11y("viewer")
		b.shot("viewer.png")
		b.do(chromedp.Click(chromedp.CSS("dialog[open] .bar button")))
		b.wait("photos like it", `document.getElementById('search-info').textContent.includes('like `+name+`') && `+imagesLoaded("#results img", 6))
		if first := eval[string](b, `document.querySelector('#results li .path').textContent`); first != name {
			t.Fatalf("photos like %s: %s first", name, first)
		}
	})

	t.Run("search by image finds the image first", func(t *testing.T) {
		b.t = t
		b.route("#/search")
		b.wait("the search view", `document.getElementById('example-file') !== null`)
		b.do(chromedp.SetUploadFiles(chromedp.CSS("#example-file"), []string{filepath.Join(l.dir, "sample4.jpg")}))
		b.wait("results like the example", imagesLoaded("#results img", 6)+` && document.querySelector('#example img').complete`)
		first := eval[string](b, `document.querySelector('#results li .path').textContent + ' ' + document.querySelector('#results li .dist').textContent`)
		if first != "sample4.jpg distance 0.000" {
			t.Fatalf("first result %q, want sample4.jpg at distance 0", first)
		}
		b.shot("search-by-image.png")
		// Dropped on the drop zone: another photo, found first too.
		raw, err := os.ReadFile(filepath.Join(l.dir, "sample1-bright.jpg"))
		if err != nil {
			t.Fatal(err)
		}
		eval[bool](b, `(() => {
			const bytes = Uint8Array.from(atob(`+strconv.Quote(base64.StdEncoding.EncodeToString(raw))+`), c => c.charCodeAt(0));
			const dt = new DataTransfer();
			dt.items.add(new File([bytes], 'sample1-bright.jpg', { type: 'image/jpeg' }));
			return document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
		})()`)
		b.wait("results like the dropped photo", `document.querySelector('#search-info').textContent.includes('like sample1-bright.jpg') && `+imagesLoaded("#results img", 6))
		first = eval[string](b, `document.querySelector('#results li .path').textContent + ' ' + document.querySelector('#results li .dist').textContent`)
		if first != "sample1-bright.jpg distance 0.000" {
			t.Fatalf("first result for the dropped photo %q", first)
		}
	})

	var ada int64
	t.Run("people: list, rename (persists), merge", func(t *testing.T) {
		b.t = t
		b.route("#/people")
		b.wait("three people with their faces", imagesLoaded("#people img.face", 3))
		b.checkA11y("people")
		b.shot("people.png")
		ids := eval[[]int64](b, `[...document.querySelectorAll('#people .person')].map(e => +e.dataset.person)`)
		if len(ids) != 3 || ids[0] != l.people[0].ID {
			t.Fatalf("people on the page %v, want %+v", ids, l.people)
		}
		// Rename the last one with the keyboard: type, Enter.
		ada = ids[2]
		sel := chromedp.CSS("#name-" + strconv.FormatInt(ada, 10))
		b.do(chromedp.Focus(sel), chromedp.SendKeys(sel, "Ada Lovelace\r"))
		b.wait("the saved toast", `document.getElementById('toast').textContent === 'Saved “Ada Lovelace”'`)
		b.do(chromedp.Reload())
		b.wait("the people again", imagesLoaded("#people img.face", 3))
		ids = eval[[]int64](b, `[...document.querySelectorAll('#people .person')].map(e => +e.dataset.person)`)
		if name := eval[string](b, `document.getElementById('name-`+strconv.FormatInt(ada, 10)+`').value`); name != "Ada Lovelace" || ids[0] != ada {
			t.Fatalf("after a reload: name %q, order %v; want Ada Lovelace first (named people come first)", name, ids)
		}
		var p personJSON
		if l.call(t, "GET", "/people/"+strconv.FormatInt(ada, 10), "", nil, &p); p.Name != "Ada Lovelace" {
			t.Fatalf("the server has %+v", p)
		}

		// Merge the second person into Ada.
		other := ids[1]
		b.do(chromedp.Click(chromedp.CSS("#select-"+strconv.FormatInt(ada, 10))), chromedp.Click(chromedp.CSS("#select-"+strconv.FormatInt(other, 10))))
		b.wait("the merge bar", `!document.getElementById('merge-bar').hidden`)
		b.do(chromedp.SetValue(chromedp.CSS("#merge-into"), strconv.FormatInt(ada, 10)))
		b.shot("people-merge.png")
		b.do(chromedp.Click(chromedp.CSS("#merge")))
		b.wait("two people left", `document.querySelectorAll('#people .person').length === 2 && `+imagesLoaded("#people img.face", 2))
		counts := eval[string](b, `document.querySelector('.person[data-person="`+strconv.FormatInt(ada, 10)+`"] .counts').textContent`)
		// They were both in the three photos of sample1.
		if counts != "3 photos · 6 faces" {
			t.Fatalf("Ada after the merge: %q", counts)
		}
		if code, _ := l.call(t, "GET", "/people/"+strconv.FormatInt(other, 10), "", nil, nil); code != 404 {
			t.Fatalf("the merged person is still there: %d", code)
		}
	})

	t.Run("a person's photos", func(t *testing.T) {
		b.t = t
		if ada == 0 {
			t.Skip("no person")
		}
		b.route("#/people/" + strconv.FormatInt(ada, 10))
		b.wait("Ada's three photos with face boxes", imagesLoaded("#person-photos img", 3)+` && document.querySelectorAll('#person-photos rect.box').length === 3`)
		if h := eval[string](b, `document.querySelector('main h1').textContent`); h != "Ada Lovelace" {
			t.Fatalf("heading %q", h)
		}
		b.checkA11y("person")
		b.shot("person.png")
		// Search within her photos.
		sel := chromedp.CSS("#person-q")
		b.do(chromedp.SendKeys(sel, "smiling\r"))
		b.wait("her photos nearest to the text", `location.hash.endsWith('?q=smiling') && `+imagesLoaded("#person-photos img", 3))
	})

	t.Run("text in photos is highlighted", func(t *testing.T) {
		b.t = t
		b.route("#/text?q=lighthouse")
		b.wait("the note with its text marked", imagesLoaded("#ocr-results img", 1)+` && document.querySelectorAll('#ocr-results polygon.box').length === 1`)
		marks := eval[[]string](b, `[...document.querySelectorAll('#ocr-results mark')].map(m => m.textContent)`)
		line := eval[string](b, `document.querySelector('#ocr-results li li').textContent`)
		if len(marks) != 1 || strings.ToLower(marks[0]) != "lighthouse" || !strings.Contains(line, "Meet at the") {
			t.Fatalf("marks %q in %q", marks, line)
		}
		// The box lies over the text: inside the image, and wide.
		w := eval[float64](b, `(() => { const r = document.querySelector('#ocr-results polygon.box').getBoundingClientRect();
			const i = document.querySelector('#ocr-results img').getBoundingClientRect();
			return r.left >= i.left && r.right <= i.right && r.top >= i.top && r.bottom <= i.bottom ? r.width / i.width : -1; })()`)
		if w < 0.3 {
			t.Fatalf("the text's box covers %.2f of the image's width (outside it: -1)", w)
		}
		b.checkA11y("text")
		b.shot("text.png")
		b.route("#/text?q=42%20total")
		b.wait("the receipt with both lines", `document.querySelectorAll('#ocr-results polygon.box').length === 2 && document.querySelectorAll('#ocr-results mark').length === 2`)
		b.shot("text-two-lines.png")
	})

	t.Run("status", func(t *testing.T) {
		b.t = t
		b.route("#/status")
		b.wait("the status panels", `document.querySelectorAll('#status table tbody tr').length >= 2`)
		text := eval[string](b, `document.getElementById('status').innerText`)
		for _, want := range []string{"Ready", "ViT-B-32__openai", "CPU", "Photos\n6", "People\n2", "exact and similar"} {
			if !strings.Contains(text, want) {
				t.Fatalf("status lacks %q:\n%s", want, text)
			}
		}
		b.wait("the header's health", `document.querySelector('#health .label').textContent === 'Ready'`)
		b.checkA11y("status")
		b.shot("status.png")
	})

	t.Run("phone width", func(t *testing.T) {
		b.t = t
		b.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
		defer b.do(chromedp.EmulateViewport(1280, 900))
		for _, v := range []struct{ hash, ready, shot string }{
			{"#/search?q=people", imagesLoaded("#results img", 6), "phone-search.png"},
			{"#/people", imagesLoaded("#people img.face", 2), "phone-people.png"},
			{"#/text?q=lighthouse", imagesLoaded("#ocr-results img", 1), "phone-text.png"},
		} {
			b.route(v.hash)
			b.wait(v.hash, v.ready)
			if over := eval[bool](b, `document.documentElement.scrollWidth > window.innerWidth`); over {
				t.Fatalf("%s: the page is wider than the phone's screen", v.hash)
			}
			if v.shot == "phone-search.png" {
				if cols := eval[int](b, `getComputedStyle(document.getElementById('results')).gridTemplateColumns.split(' ').length`); cols < 2 {
					t.Fatalf("%d columns of results on a phone", cols)
				}
			}
			b.shot(v.shot)
		}
	})

	t.Run("with an API key", func(t *testing.T) {
		b.t = t
		const key = "k3y-for-the-page"
		t.Setenv("MLSERVE_API_KEY", key)
		l.restart(t, key)
		// The page itself opens without the key; the library does not.
		if code, _ := l.call(t, "GET", "/ui/", "", nil, nil); code != 200 {
			t.Fatalf("/ui/ without the key: %d", code)
		}
		for _, path := range []string{"/people", "/status", "/thumbs/1", "/faces/1/crop", "/search?ocr=x"} {
			if code, _ := l.call(t, "GET", path, "", nil, nil); code != 401 {
				t.Fatalf("%s without the key: %d", path, code)
			}
		}
		b.do(chromedp.Navigate(l.base + "/ui/#/search?q=people"))
		b.wait("the key panel", `!document.getElementById('key-panel').hidden && document.getElementById('key-msg').textContent.includes('MLSERVE_API_KEY')`)
		b.shot("key.png")
		b.do(chromedp.SendKeys(chromedp.CSS("#key-input"), key+"\r"))
		b.wait("results with thumbnails fetched with the key", imagesLoaded("#results img", 6)+
			` && [...document.querySelectorAll('#results img')].every(i => i.src.startsWith('blob:'))`)
		if stored := eval[string](b, `sessionStorage.getItem('mlserve.apiKey')`); stored != key {
			t.Fatalf("sessionStorage holds %q", stored)
		}
		// With the key, paths are absolute.
		if p := eval[string](b, `document.querySelector('#results .path').textContent`); !strings.HasPrefix(p, l.dir+"/") {
			t.Fatalf("path %q with the key", p)
		}
		b.route("#/people")
		b.wait("people with faces fetched with the key", imagesLoaded("#people img.face", 2))
	})
	t.Logf("browser checks took %s", time.Since(start).Round(time.Millisecond))
}
