// Package cdp drives a headless Chromium through the DevTools protocol over
// --remote-debugging-pipe (file descriptors 3 and 4, messages ended by a NUL
// byte), so that browser tests can click and read a page without a
// WebSocket library or a driver binary. Tests only.
package cdp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"
)

// Browser is one Chromium process with a fresh profile.
type Browser struct {
	cmd     *exec.Cmd
	profile string
	toChrome,
	fromChrome *os.File
	stderr *lockedBuffer

	mu        sync.Mutex
	nextID    int64
	waiting   map[int64]chan message
	loads     map[string][]string // by session: loader ids of the main frame's loads
	mainFrame map[string]string   // by session: the main frame's id
	readErr   error
	done      chan struct{} // closed when the reader stops
}

type message struct {
	ID        int64           `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    any             `json:"params,omitempty"` // a map when decoded
	SessionID string          `json:"sessionId,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// Start runs bin headless; args are added to the defaults.
func Start(bin string, args ...string) (*Browser, error) {
	profile, err := os.MkdirTemp("", "postback-cdp-")
	if err != nil {
		return nil, err
	}
	// Chromium reads commands from fd 3 and writes answers to fd 4.
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--remote-debugging-pipe", "--user-data-dir=" + profile, "about:blank"}
	b := &Browser{profile: profile, toChrome: cmdW, fromChrome: resR, stderr: &lockedBuffer{},
		waiting: map[int64]chan message{}, loads: map[string][]string{}, mainFrame: map[string]string{}, done: make(chan struct{})}
	b.cmd = exec.Command(bin, append(args, base...)...)
	b.cmd.ExtraFiles = []*os.File{cmdR, resW}
	b.cmd.Stderr = b.stderr
	if err := b.cmd.Start(); err != nil {
		os.RemoveAll(profile)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	cmdR.Close()
	resW.Close()
	go b.read()
	return b, nil
}

// Close ends the browser and removes its profile.
func (b *Browser) Close() {
	_ = b.toChrome.Close()
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
	_ = b.fromChrome.Close()
	<-b.done
	os.RemoveAll(b.profile)
}

// Stderr is what Chromium logged, for a failing test's message.
func (b *Browser) Stderr() string { return b.stderr.String() }

func (b *Browser) read() {
	defer close(b.done)
	r := bufio.NewReader(b.fromChrome)
	for {
		raw, err := r.ReadBytes(0)
		if err != nil {
			b.mu.Lock()
			b.readErr = fmt.Errorf("chromium pipe: %w", err)
			for id, ch := range b.waiting {
				close(ch)
				delete(b.waiting, id)
			}
			b.mu.Unlock()
			return
		}
		var m message
		if json.Unmarshal(raw[:len(raw)-1], &m) != nil {
			continue
		}
		if m.ID == 0 {
			b.noteLoad(m)
			continue
		}
		b.mu.Lock()
		ch := b.waiting[m.ID]
		delete(b.waiting, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// noteLoad records a page's main frame finishing a load (its frame id is
// the target id, which is how the session's main frame is told apart).
func (b *Browser) noteLoad(m message) {
	if m.Method != "Page.lifecycleEvent" {
		return
	}
	raw, _ := json.Marshal(m.Params)
	var ev struct {
		FrameID  string `json:"frameId"`
		LoaderID string `json:"loaderId"`
		Name     string `json:"name"`
	}
	if json.Unmarshal(raw, &ev) != nil || ev.Name != "load" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mainFrame[m.SessionID] == ev.FrameID {
		b.loads[m.SessionID] = append(b.loads[m.SessionID], ev.LoaderID)
	}
}

// Call sends one command (in session, "" for the browser) and decodes its
// result into out (nil: ignored).
func (b *Browser) Call(ctx context.Context, session, method string, params, out any) error {
	b.mu.Lock()
	if b.readErr != nil {
		err := b.readErr
		b.mu.Unlock()
		return err
	}
	b.nextID++
	id := b.nextID
	ch := make(chan message, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	if params == nil {
		params = struct{}{}
	}
	data, err := json.Marshal(message{ID: id, Method: method, Params: params, SessionID: session})
	if err != nil {
		return err
	}
	if _, err := b.toChrome.Write(append(data, 0)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: the browser went away", method)
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %s (%d)", method, m.Error.Message, m.Error.Code)
		}
		if out != nil {
			return json.Unmarshal(m.Result, out)
		}
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.waiting, id)
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// Page is one tab.
type Page struct {
	b       *Browser
	session string
}

// NewPage opens a blank tab and attaches to it.
func (b *Browser) NewPage(ctx context.Context) (*Page, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.Call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return nil, err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.Call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		return nil, err
	}
	p := &Page{b: b, session: att.SessionID}
	b.mu.Lock()
	b.mainFrame[p.session] = target.TargetID
	b.mu.Unlock()
	for _, m := range []string{"Page.enable", "Network.enable"} {
		if err := b.Call(ctx, p.session, m, nil, nil); err != nil {
			return nil, err
		}
	}
	if err := b.Call(ctx, p.session, "Page.setLifecycleEventsEnabled", map[string]any{"enabled": true}, nil); err != nil {
		return nil, err
	}
	return p, nil
}

// SetHeaders adds headers to every request of the page (Basic auth).
func (p *Page) SetHeaders(ctx context.Context, h map[string]string) error {
	return p.b.Call(ctx, p.session, "Network.setExtraHTTPHeaders", map[string]any{"headers": h}, nil)
}

// Navigate loads url and waits until the new document has loaded.
func (p *Page) Navigate(ctx context.Context, url string) error {
	var res struct {
		LoaderID  string `json:"loaderId"`
		ErrorText string `json:"errorText"`
	}
	if err := p.b.Call(ctx, p.session, "Page.navigate", map[string]any{"url": url}, &res); err != nil {
		return err
	}
	if res.ErrorText != "" {
		return fmt.Errorf("navigate %s: %s", url, res.ErrorText)
	}
	return p.wait(ctx, func(loads []string) bool { return slices.Contains(loads, res.LoaderID) })
}

// WaitLoaded waits for the main frame's next load after Mark returned
// before: after a click that submits a form.
func (p *Page) WaitLoaded(ctx context.Context, before int) error {
	return p.wait(ctx, func(loads []string) bool { return len(loads) > before })
}

func (p *Page) wait(ctx context.Context, done func(loads []string) bool) error {
	for {
		p.b.mu.Lock()
		loads, err := p.b.loads[p.session], p.b.readErr
		ok := done(loads)
		p.b.mu.Unlock()
		if ok {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the page to load: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Mark counts the page's loads so far, for WaitLoaded.
func (p *Page) Mark() int {
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	return len(p.b.loads[p.session])
}

// Eval evaluates expr in the page and decodes its value into out (nil:
// ignored). A thrown exception is an error.
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.Call(ctx, p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true}, &res)
	if err != nil {
		return err
	}
	if res.Exception != nil {
		return errors.New("js: " + res.Exception.Text + " " + res.Exception.Exception.Description)
	}
	if out != nil && len(res.Result.Value) > 0 {
		return json.Unmarshal(res.Result.Value, out)
	}
	return nil
}

// lockedBuffer collects stderr safely while the process writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
