package cdp

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// The client loads a page, reads it, submits its form by a click and
// follows the navigation: what the report's browser tests rely on.
func TestClickAndRead(t *testing.T) {
	bin := testutil.NeedTool(t, "chromium", os.Getenv("CHROMIUM"), "/usr/bin/chromium", "chromium-browser")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if r.Method == http.MethodPost {
			r.ParseForm()
			fmt.Fprintf(w, `<p id="got">%s %s</p>`, r.PostForm.Get("v"), r.Header.Get("X-Test"))
			return
		}
		fmt.Fprint(w, `<form method="post"><input name="v" value="clicked"><button id="go">Go</button></form>`)
	}))
	defer srv.Close()
	b, err := Start(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := b.NewPage(ctx)
	if err != nil {
		t.Fatalf("%v\n%s", err, b.Stderr())
	}
	if err := p.SetHeaders(ctx, map[string]string{"X-Test": "header"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Navigate(ctx, srv.URL); err != nil {
		t.Fatal(err)
	}
	mark := p.Mark()
	if err := p.Eval(ctx, `document.getElementById("go").click()`, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitLoaded(ctx, mark); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := p.Eval(ctx, `document.getElementById("got").textContent`, &got); err != nil {
		t.Fatal(err)
	}
	if got != "clicked header" {
		t.Fatalf("after the click the page says %q, want %q", got, "clicked header")
	}
	if err := p.Eval(ctx, `throw new Error("boom")`, nil); err == nil {
		t.Fatal("an exception in the page was not an error")
	}
}
