package vinequeue_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"

	"github.com/vineroute/vinequeue/internal/crashtest"
)

// The SIGKILL cells. The parent re-executes the test binary as a child (the
// env var matrixChildEnv carries the cell); the child runs the queue with
// producers that never stop and appends what happened to a log, one write
// per event, each written after the call it reports returned:
//
//	A <id> <unixnano>        accepted (the call returned nil)
//	R <id> <unixnano> <err>  refused (the call returned err)
//	D <g> <id> <id> ...      a batch Send is about to return nil for, called
//	                         from goroutine g (senderID)
//	X <id> ...               a batch handed to OnDrop
//	C <n>                    n items delivered damaged
//	M <held> <outstanding>   a new memory peak
//	S <unixnano>             Stats.DurableThrough, when it moved (polled
//	                         every few ms)
//	N <note>                 a violation the child saw
//
// The parent SIGKILLs the child at a random moment, maybe several times in a
// row on the same WAL directory, then runs a last Queue in-process on that
// directory with the sink down at first (replay beside intake) and a clean
// Stop, and checks the whole history against the cell's promises (check).

const matrixChildEnv = "VINEQUEUE_MATRIX_CHILD"

type childSpec struct {
	Cell      cell
	Dir, Log  string
	Run       int
	MaxPerPrc int
}

// TestMatrixCrash runs the cells that end with SIGKILL. Every cell in
// VINEQUEUE_MATRIX_LONG; otherwise a covering subset (see latin) with at
// least one kill each: 33 kills, 11 with -short. VINEQUEUE_CRASH_KILLS=n
// spreads n kills over the cells run.
func TestMatrixCrash(t *testing.T) {
	if spec := os.Getenv(matrixChildEnv); spec != "" {
		matrixChild(spec) // never returns
	}
	sc := matrixScale()
	cs := sc.killCells(cells())
	kills := 1
	if sc.long {
		kills = 2
	}
	if n, err := strconv.Atoi(os.Getenv("VINEQUEUE_CRASH_KILLS")); err == nil && n > 0 {
		kills = max(1, (n+len(cs)-1)/len(cs))
	}
	maxPer := 20000
	if sc.long {
		maxPer = 200000
	}
	t.Logf("%d SIGKILL cells × %d kills", len(cs), kills)
	for _, c := range cs {
		t.Run(c.name()+"/kill", func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			dir, logs := t.TempDir(), t.TempDir()
			var runs []*runRec
			for k := range kills {
				runs = append(runs, runChild(t, childSpec{Cell: c, Dir: dir, Log: filepath.Join(logs, fmt.Sprintf("run%d", k)), Run: k, MaxPerPrc: maxPer}, sc))
			}
			ok := true
			if c.wal() {
				var last *runRec
				last, ok = runInProcess(c, sinkGated, dir, kills, runOpts{items: 50, flush: true, mustReplay: mustReplay(c, runs)})
				runs = append(runs, last)
			}
			t.Log(summary(runs))
			if c.Mode == modePeriodic {
				t.Log(durabilityLag(runs))
			}
			check(c, runs).report(t)
			if ok {
				goleak.VerifyNone(t, leaks)
			}
		})
	}
}

// mustReplay counts the items the killed runs accepted, that the mode keeps
// at a SIGKILL, and that no run delivered: the next New must replay them.
func mustReplay(c cell, runs []*runRec) int {
	delivered := map[uint64]bool{}
	for _, r := range runs {
		for _, ids := range r.deliveries {
			for _, id := range ids {
				delivered[id] = true
			}
		}
	}
	n := 0
	for _, r := range runs {
		for _, it := range r.items {
			if it.status != accepted || delivered[it.id] {
				continue
			}
			if c.Mode == modeSync || c.Mode == modePeriodic && durableAtKill(r, it) {
				n++
			}
		}
	}
	return n
}

// durabilityLag is how stale DurableThrough was at each kill (kill time
// minus the last DurableThrough logged): a figure, not a promise (it is how
// long checkpoints took here).
func durabilityLag(runs []*runRec) string {
	var b strings.Builder
	b.WriteString("DurableThrough at the kill:")
	for _, r := range runs {
		switch {
		case !r.killed:
		case r.durableThrough == 0:
			fmt.Fprintf(&b, " run %d none;", r.run)
		default:
			fmt.Fprintf(&b, " run %d %v before;", r.run, time.Duration(r.killAt-r.durableThrough).Round(time.Millisecond))
		}
	}
	return b.String()
}

// runChild starts a child for spec, SIGKILLs it a random while after it first
// accepted an item, and reads its log.
func runChild(t *testing.T, spec childSpec, sc scale) *runRec {
	t.Helper()
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	c := crashtest.Start(t, "TestMatrixCrash", nil, matrixChildEnv+"="+string(js))
	rec := &runRec{run: spec.Run, killed: true}
	started := eventually(10*time.Second, func() bool {
		if c.Ended() {
			return true
		}
		fi, err := os.Stat(spec.Log)
		return err == nil && fi.Size() > 0
	})
	if !started {
		rec.notef("child never started: no event in 10s")
	}
	err = c.KillAfter(sc.killMin + rand.N(sc.killMax-sc.killMin))
	rec.killAt = c.KilledAt().UnixNano()
	if err != nil {
		rec.killAt = time.Now().UnixNano()
		// The child died on its own: a crash of the queue (say, "schedule:
		// holding locks"). Its log still counts, as if killed then.
		rec.notef("%v", err)
	} else if s := c.Crashed(); s != "" {
		rec.notef("child stderr: %s", s)
	}
	if err := parseChildLog(spec.Log, rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func parseChildLog(path string, rec *runRec) error {
	data, err := crashtest.ReadLog(path) // a line cut by the kill is dropped
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		kind, rest, _ := strings.Cut(line, " ")
		switch kind {
		case "A", "R":
			f := strings.SplitN(rest, " ", 3)
			id, _ := strconv.ParseUint(f[0], 10, 64)
			at, _ := strconv.ParseInt(f[1], 10, 64)
			it := itemRec{id: id, status: status(kind[0]), at: at}
			if len(f) > 2 {
				it.err = f[2]
			}
			rec.items = append(rec.items, it)
		case "D", "X":
			var ids []uint64
			for _, s := range strings.Fields(rest) {
				id, _ := strconv.ParseUint(s, 10, 64)
				ids = append(ids, id)
			}
			if kind == "D" {
				if len(ids) == 0 {
					return fmt.Errorf("%s: a D line without its sender: %q", path, line)
				}
				rec.senders = append(rec.senders, ids[0])
				rec.deliveries = append(rec.deliveries, ids[1:])
			} else {
				rec.dropped = append(rec.dropped, ids...)
			}
		case "C":
			n, _ := strconv.Atoi(rest)
			rec.corrupt += n
		case "M":
			f := strings.Fields(rest)
			h, _ := strconv.ParseInt(f[0], 10, 64)
			o, _ := strconv.ParseInt(f[1], 10, 64)
			rec.maxHeld, rec.maxOut = max(rec.maxHeld, h), max(rec.maxOut, o)
		case "S":
			d, _ := strconv.ParseInt(rest, 10, 64)
			rec.durableThrough = max(rec.durableThrough, d)
		case "N":
			rec.notef("%s", rest)
		}
	}
	return nil
}

// matrixChild is the child's side: the cell's queue, producers that run
// until the kill, a log of what happened. It never returns.
func matrixChild(js string) {
	var spec childSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		os.Exit(2)
	}
	f, err := os.OpenFile(spec.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child log:", err)
		os.Exit(2)
	}
	// One write per event: the kill cuts between events, or inside the
	// last one, which the reader drops (crashtest.ReadLog).
	emit := func(b []byte) { f.Write(b) }
	c := spec.Cell
	var out atomic.Int64
	s := &sink{kind: c.Sink, t0: time.Now(), gate: make(chan struct{}), out: &out,
		onBatch: func(sender uint64, ids []uint64, corrupt int) {
			if corrupt > 0 {
				emit([]byte("C " + strconv.Itoa(corrupt) + "\n"))
			}
			emit(idLine('D', append([]uint64{sender}, ids...)))
		}}
	onDrop := func(b [][]byte, _ error) {
		ids := make([]uint64, 0, len(b))
		for _, it := range b {
			id, _ := parseItem(it)
			ids = append(ids, id)
			out.Add(-itemBytes(id))
		}
		emit(idLine('X', ids))
	}
	q, err := vq.New(c.config(spec.Dir, s.send, onDrop))
	if err != nil {
		emit([]byte("N New: " + oneLine(err.Error()) + "\n"))
		os.Exit(2)
	}
	var reported atomic.Int64
	go poll(q, &out, nil, func(h, o int64) {
		if m := max(h, o); m > reported.Load()+512 {
			reported.Store(m)
			emit(fmt.Appendf(nil, "M %d %d\n", h, o))
		}
	})
	go func() { // DurableThrough, each time it moves (periodic: what check uses)
		if c.Mode != modePeriodic {
			return
		}
		tick := time.NewTicker(2 * time.Millisecond)
		var last time.Time
		for range tick.C {
			if d := q.Stats().DurableThrough; !d.Equal(last) {
				last = d
				emit(fmt.Appendf(nil, "S %d\n", d.UnixNano()))
			}
		}
	}()
	var done atomic.Int64
	for p := range producers {
		go produce(q, c.Intake, spec.Run, p, spec.MaxPerPrc, &out, &done, func(acc, ref []uint64, err error) {
			at := time.Now().UnixNano()
			var b []byte
			for _, id := range acc {
				b = fmt.Appendf(b, "A %d %d\n", id, at)
			}
			for _, id := range ref {
				b = fmt.Appendf(b, "R %d %d %s\n", id, at, oneLine(err.Error()))
			}
			if err != nil && !c.errAllowed(err) {
				b = fmt.Appendf(b, "N refused with an error the policy does not name: %s (%v policy)\n", oneLine(err.Error()), c.Policy)
			}
			emit(b)
		})
	}
	time.Sleep(time.Hour) // until the kill
	os.Exit(0)
}

func idLine(kind byte, ids []uint64) []byte {
	b := []byte{kind}
	for _, id := range ids {
		b = append(b, ' ')
		b = strconv.AppendUint(b, id, 10)
	}
	return append(b, '\n')
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
