package vinequeue_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vineroute/vinequeue"
)

// These tests use the testing package alone, leaving the core go.mod's
// testify requirement to the packages that use it.
//
// The README's Go snippets live in Example functions, here and (the Kafka
// one, since the core module cannot import contrib/kafka) in
// examples/gateway/readme_test.go, so that they compile and run;
// TestREADMESnippets checks that each snippet is still a copy of one.
var readmeMirrors = []string{"readme_example_test.go", "examples/gateway/readme_test.go", "ack_example_test.go"}

type click struct {
	user uint64
	url  string
}

// Example_readmeKeyed mirrors the README's Enqueue/EnqueueKey snippet.
func Example_readmeKeyed() {
	var (
		mu   sync.Mutex
		user []string
	)
	store := func(_ context.Context, batch []click) error {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range batch {
			if c.user == 42 {
				user = append(user, c.url)
			}
		}
		return nil
	}
	func() {
		q, err := vinequeue.New(vinequeue.Config[click]{
			Send: func(ctx context.Context, batch []click) error {
				return store(ctx, batch) // must not modify or keep batch: the queue reuses it
			},
			Workers: 4,
		})
		if err != nil {
			log.Fatal(err)
		}
		defer q.Close()

		_ = q.Enqueue(click{url: "/"})               // no order kept
		_ = q.EnqueueKey(42, click{42, "/cart"})     // user 42's clicks arrive in order…
		_ = q.EnqueueKey(42, click{42, "/checkout"}) // …this one after /cart
	}()
	fmt.Println(user)
	// Output: [/cart /checkout]
}

// Example_readmeWAL mirrors the README's WAL snippet: Periodic mode, whose
// records a later New on the same directory replays.
func Example_readmeWAL() {
	dir, err := os.MkdirTemp("", "vinequeue-readme")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var delivered []string
	send := func(_ context.Context, batch [][]byte) error {
		for _, b := range batch {
			delivered = append(delivered, string(b)) // copied: batch is reused
		}
		return nil
	}

	q, err := vinequeue.New(vinequeue.Config[[]byte]{
		Send: send,
		WAL: vinequeue.WALConfig{
			Dir:          dir,                    // one queue per directory
			Mode:         vinequeue.Periodic,     // or Sync: nothing accepted is lost
			SyncInterval: 200 * time.Millisecond, // the bound on Periodic's loss
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, v := range []string{"a", "b"} {
		if err := q.Enqueue([]byte(v)); err != nil {
			log.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		log.Fatal(err)
	}
	slices.Sort(delivered) // Enqueue keeps no order
	fmt.Println(delivered)
	// Output: [a b]
}

// Example_readmeParkKeys mirrors the README's ParkKeys snippet: key 7's
// poison item parks the key; key 8 flows; the requeue delivers key 7's
// items in order.
func Example_readmeParkKeys() {
	dir, err := os.MkdirTemp("", "vinequeue-readme")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var (
		mu     sync.Mutex
		got    []string
		poison = true
	)
	q, err := vinequeue.New(vinequeue.Config[[]byte]{
		Send: func(_ context.Context, batch [][]byte) error {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range batch {
				if poison && string(v) == "bad" {
					return vinequeue.Permanent(errors.New("poison"))
				}
			}
			for _, v := range batch {
				got = append(got, string(v))
			}
			return nil
		},
		BatchSize: 1, FlushInterval: 10 * time.Millisecond,
		WAL:      vinequeue.WALConfig{Dir: dir, Mode: vinequeue.Sync},
		ParkKeys: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	_ = q.EnqueueKey(7, []byte("bad"))
	_ = q.EnqueueKey(7, []byte("after"))
	_ = q.EnqueueKey(8, []byte("other"))
	_ = q.Flush(ctx)
	mu.Lock()
	fmt.Println(got, q.Stats().ParkedKeys)
	poison = false
	mu.Unlock()

	ds, _ := q.DeadLetters() // ds[i].Keys > 0: keyed; ds[i].Parked: waiting behind one
	// Its items, then the parked ones, in the key's order. (Or
	// q.PurgeDeadLetters(ds[0].ID): drop the poison, deliver the parked items.)
	if _, err := q.RequeueDeadLetters(ds[0].ID); err != nil {
		log.Fatal(err)
	}
	_ = q.Flush(ctx) // waits for the released items too

	mu.Lock()
	fmt.Println(got, q.Stats().ParkedKeys)
	mu.Unlock()
	// Output:
	// [other] 1
	// [other bad after] 0
}

// TestREADMESnippets: every ```go block of README.md is a copy of a run of
// lines of one of readmeMirrors (compared line by line, blank lines and
// runs of white space aside), so that the snippets compile and run as the
// Examples do.
func TestREADMESnippets(t *testing.T) {
	skipOutsideRepository(t)
	var mirrors [][]string
	for _, name := range readmeMirrors {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		mirrors = append(mirrors, normalizedLines(string(b)))
	}
	blocks := readmeGoBlocks(t)
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```go block")
	}
	for _, blk := range blocks {
		want := normalizedLines(blk.text)
		found := slices.ContainsFunc(mirrors, func(m []string) bool { return containsRun(m, want) })
		if !found {
			t.Errorf("README.md:%d: this ```go block is in none of %v; copy it from (or into) an Example there:\n%s",
				blk.line, readmeMirrors, blk.text)
		}
	}
}

type readmeBlock struct {
	line int // of the opening fence
	text string
}

func readmeGoBlocks(t *testing.T) []readmeBlock {
	f, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks []readmeBlock
		cur    *readmeBlock
		text   strings.Builder
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```go":
			cur = &readmeBlock{line: n}
			text.Reset()
		case cur != nil && strings.TrimSpace(line) == "```":
			cur.text = text.String()
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			text.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("README.md:%d: the ```go block is not closed", cur.line)
	}
	return blocks
}

var spaces = regexp.MustCompile(`\s+`)

func normalizedLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(spaces.ReplaceAllString(l, " ")); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func containsRun(lines, run []string) bool {
	for i := 0; i+len(run) <= len(lines); i++ {
		if slices.Equal(lines[i:i+len(run)], run) {
			return true
		}
	}
	return false
}

// TestREADMEPaths: every file the README names (in backquotes or as a link
// target) is in the repository; bench-out/ is make bench's output.
func TestREADMEPaths(t *testing.T) {
	skipOutsideRepository(t)
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?:`|\\]\\()([A-Za-z0-9_.*/-]+\\.(?:go|md|s|sh|txt|svg|mod|work))[`)]")
	var missing []string
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		p := m[1]
		if strings.HasPrefix(p, "bench-out/") {
			continue
		}
		if matches, _ := filepath.Glob(filepath.FromSlash(p)); len(matches) == 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Errorf("README.md names files that are not in the repository: %q", missing)
	}
}

// skipOutsideRepository skips a test of the README against the repository
// where only the core module is at hand: its module zip (a user's module
// cache) has README.md but not the other modules' directories.
func skipOutsideRepository(t *testing.T) {
	if _, err := os.Stat(filepath.Join("examples", "gateway", "go.mod")); err != nil {
		t.Skip("not in a checkout of the repository (examples/gateway is missing): the README names files of other modules")
	}
}
