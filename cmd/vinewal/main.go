// Command vinewal inspects, verifies, dumps and repairs a VineQueue WAL
// directory: the fsck of the disk tier.
//
//	vinewal inspect [-json] DIR         segments, ids, sizes, ack mark
//	vinewal verify DIR                  exit 1 on damage, with offsets
//	vinewal dump [-json] [-items] [-from ID] DIR|SEGMENT
//	                                    records as text or JSON lines
//	vinewal repair DIR                  move damage aside, keep the intact prefix
//	vinewal dlq list [-json] DIR        dead letters: id, time, items, bytes, reason
//	vinewal dlq dump [-json] DIR ID...  a dead letter's items
//	vinewal dlq requeue DIR [ID...]     move dead letters (all if no id) back
//	                                    into the log: the next start replays them
//	vinewal dlq purge DIR ID... | -all DIR
//	                                    delete dead letters
//
// Every command takes the keys of an encrypted directory (one written with
// WALConfig.EncryptionKey): -key-file FILE names the key it is written
// under, -decrypt-key-file FILE an older one (repeatable, or a
// comma-separated list of files). A key file holds exactly 32 raw bytes,
// or 64 hex digits (white space around them ignored). inspect and verify
// check checksums without any key — and, given keys, report the key ids
// none of them opens and (verify) open every record; dump and dlq list and
// dump need the keys to show anything; repair, dlq requeue and dlq purge
// open the directory as a Queue would, so they need every key it needs,
// and dlq requeue, which writes records, needs -key-file for an encrypted
// directory so that it never writes items in the clear.
//
// inspect, verify, dump, dlq list and dlq dump only read (they take no
// lock, so they can look at a directory in use; its newest records may be
// in flight). repair, dlq requeue and dlq purge run the recovery a Queue
// would run at start-up, so the directory must not be in use. Exit status:
// 0 fine; 1 damage found (verify; dlq list with a damaged dead letter) or
// an id that is not a dead letter (dlq dump, requeue, purge: the others are
// done); 2 usage or I/O error.
//
// A queue with ParkKeys keeps the keys of keyed dead letters: dlq list and
// dump show them, and mark the dead letters parked behind an earlier one
// of their key. Requeueing or purging a key's failed dead letter here
// releases the key: the next start delivers, after the replay, the items
// parked behind it, in order. dlq requeue refuses (exit 1, nothing moved)
// keyed dead letters it cannot move in their key's order: any while the
// main log still holds items not delivered (a Stop out of time, a crash),
// and parked ones without their key's failed one. Start the queue and call
// its RequeueDeadLetters for those.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/vineroute/vinequeue/wal"
)

const usage = `usage:
  vinewal inspect [-json] [KEYS] DIR
  vinewal verify [KEYS] DIR
  vinewal dump [-json] [-items] [-from ID] [KEYS] DIR|SEGMENT
  vinewal repair [KEYS] DIR
  vinewal dlq list [-json] [KEYS] DIR
  vinewal dlq dump [-json] [KEYS] DIR ID...
  vinewal dlq requeue [KEYS] DIR [ID...]
  vinewal dlq purge [KEYS] DIR ID...
  vinewal dlq purge -all [KEYS] DIR
KEYS, for an encrypted directory:
  -key-file FILE           the key it is written under
  -decrypt-key-file FILE   an older key (repeatable, or FILE,FILE,...)
  a key file holds 32 raw bytes or 64 hex digits
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	code := 0
	switch args[0] {
	case "inspect":
		err = inspect(args[1:], stdout)
	case "verify":
		code, err = verify(args[1:], stdout)
	case "dump":
		err = dump(args[1:], stdout)
	case "repair":
		err = repair(args[1:], stdout, stderr)
	case "dlq":
		code, err = dlq(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "vinewal: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "vinewal:", keyHint(err))
		if errors.Is(err, errUsage) {
			fmt.Fprint(stderr, usage)
		}
		return 2
	}
	return code
}

var errUsage = errors.New("bad usage")

func oneDir(fs *flag.FlagSet, args []string) (string, error) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return "", fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 1 {
		return "", fmt.Errorf("%w: want exactly one directory", errUsage)
	}
	return fs.Arg(0), nil
}

func inspect(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	kf := addKeyFlags(fs)
	dir, err := oneDir(fs, args)
	if err != nil {
		return err
	}
	keys, err := kf.all()
	if err != nil {
		return err
	}
	r, err := wal.Inspect(dir, keys...)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	fmt.Fprintf(out, "dir %s\n", r.Dir)
	switch {
	case r.AckProblem != "":
		fmt.Fprintf(out, "ack log: DAMAGED: %s (records on disk would be replayed again; ids missing from disk cannot be told lost or acknowledged)\n", r.AckProblem)
	default:
		fmt.Fprintf(out, "ack log: ack mark %d, %d ids acknowledged, written mark %d\n", r.AckMark, r.AckedIDs, r.Written)
	}
	if r.AckTorn {
		fmt.Fprintln(out, "ack log: its last write was cut short (a crash); harmless, the next open rewrites it")
	}
	var total, used int64
	keyed, unsalted := 0, 0
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEGMENT\tFIRST\tLAST\tRECORDS\tPENDING\tSIZE\tUSED\tCODEC\tKEY\tSTATUS")
	for _, s := range r.Segments {
		status := "ok"
		switch {
		case s.Damage != nil:
			status = fmt.Sprintf("DAMAGED at %d: %s (%d records lost)", s.Damage.Offset, s.Damage.Reason, s.LostRecords)
		case s.Empty:
			status = fmt.Sprintf("empty or zero-filled (%d records lost)", s.LostRecords)
		case s.Repaired:
			status = "ok (repaired)"
		}
		key := s.KeyID
		if key == "" {
			key = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", s.Name, s.FirstID, s.LastID, s.Records, s.Pending, s.FileSize, s.Used, s.Compression, key, status)
		total += s.FileSize
		used += s.Used
		keyed += s.Keyed
		if s.Unsalted {
			unsalted++
		}
	}
	tw.Flush()
	fmt.Fprintf(out, "%d segments, %d bytes on disk, %d bytes of records, last id %d, %d records not acknowledged (would be replayed)\n",
		len(r.Segments), total, used, r.LastID, r.Pending)
	if keyed > 0 {
		fmt.Fprintf(out, "%d of the records are keyed: their items carry their keys (dump shows them)\n", keyed)
	}
	if unsalted > 0 {
		fmt.Fprintf(out, "%d segments in an older, unsalted format: after damage, a record forged inside an item could pass for a real one there until they are drained\n", unsalted)
	}
	printLosses(out, r)
	for _, q := range r.Quarantined {
		fmt.Fprintf(out, "quarantined: %s\n", q)
	}
	printKeys(out, r, kf.given())
	return nil
}

// printKeys names the keys an encrypted directory needs, and, when keys
// were given, those missing.
func printKeys(out io.Writer, r wal.Report, given bool) {
	if len(r.KeyIDs) == 0 {
		return
	}
	fmt.Fprintf(out, "encrypted: segments and dead letters sealed under key ids %s\n", strings.Join(r.KeyIDs, ", "))
	switch {
	case !given:
		fmt.Fprintln(out, "keys: none given (-key-file, -decrypt-key-file); checksums need none")
	case len(r.MissingKeys) > 0:
		fmt.Fprintf(out, "keys: MISSING key ids %s: a Queue with the keys given would refuse the directory\n", strings.Join(r.MissingKeys, ", "))
	default:
		fmt.Fprintln(out, "keys: the keys given open every file")
	}
}

// printLosses lists what Open would count as lost, and the ids whose fate
// a damaged ack log hides.
func printLosses(out io.Writer, r wal.Report) {
	for _, l := range r.Losses {
		fmt.Fprintf(out, "lost: %s\n", l)
	}
	if r.LostRecords > 0 {
		fmt.Fprintf(out, "%d records lost in all\n", r.LostRecords)
	}
	for _, u := range r.Unknown {
		fmt.Fprintf(out, "unknown: ids %d-%d: %s\n", u.From, u.To, u.Reason)
	}
}

func verify(args []string, out io.Writer) (int, error) {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	kf := addKeyFlags(fs)
	dir, err := oneDir(fs, args)
	if err != nil {
		return 2, err
	}
	keys, err := kf.all()
	if err != nil {
		return 2, err
	}
	r, err := wal.Inspect(dir, keys...)
	if err != nil {
		return 2, err
	}
	bad := 0
	for _, s := range r.Segments {
		if s.Damage != nil {
			bad++
			fmt.Fprintf(out, "%s: damaged at offset %d: %s; %d records lost in it, its intact records (up to id %d) kept\n",
				filepath.Join(dir, s.Name), s.Damage.Offset, s.Damage.Reason, s.LostRecords, s.LastID)
		}
	}
	if r.AckProblem != "" {
		fmt.Fprintf(out, "%s: %s\n", filepath.Join(dir, "ACK"), r.AckProblem)
	}
	printLosses(out, r)
	printKeys(out, r, kf.given())
	// With keys, every sealed record is opened too: its tag proves it was
	// written under the key and not altered since.
	unopened := 0
	if kf.given() && len(r.KeyIDs) > 0 && len(r.MissingKeys) == 0 {
		for _, s := range r.Segments {
			if s.KeyID == "" || s.Empty {
				continue
			}
			p := filepath.Join(dir, s.Name)
			if _, err := wal.ReadSegment(p, func(wal.Record) error { return nil }, keys...); err != nil {
				unopened++
				fmt.Fprintf(out, "%s: %v\n", p, err)
			}
		}
	}
	if r.Damaged() || unopened > 0 {
		fmt.Fprintf(out, "damage found: %d of %d segments damaged, %d records would be lost; `vinewal repair %s` keeps the intact records, counts the rest and moves the damage aside\n",
			bad+unopened, len(r.Segments), r.LostRecords, dir)
		return 1, nil
	}
	if kf.given() && len(r.MissingKeys) > 0 {
		return 1, nil
	}
	fmt.Fprintf(out, "ok: %d segments verified, ids continuous up to %d, %d records not acknowledged\n", len(r.Segments), r.LastID, r.Pending)
	return 0, nil
}

// dumpRecord is the JSON shape of one record (or item, with -items).
type dumpRecord struct {
	Segment     string    `json:"segment"`
	ID          uint64    `json:"id"`
	Time        time.Time `json:"time"`
	Offset      int64     `json:"offset"`
	Compression string    `json:"compression"`
	Stored      int       `json:"stored_bytes"`
	Gap         bool      `json:"gap,omitempty"`
	Item        *int      `json:"item,omitempty"`
	Keys        []uint64  `json:"keys,omitempty"`   // a keyed record's, one per item
	Key         *uint64   `json:"key,omitempty"`    // an item's, in a keyed record
	Text        *string   `json:"text,omitempty"`   // payload, when valid UTF-8
	Base64      []byte    `json:"base64,omitempty"` // payload otherwise
}

func dump(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dump", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "one JSON object per line")
	items := fs.Bool("items", false, "split payloads into items (records written by AppendItem or framed with AppendFrame)")
	from := fs.Uint64("from", 0, "skip records with smaller ids")
	kf := addKeyFlags(fs)
	target, err := oneDir(fs, args)
	if err != nil {
		return err
	}
	keys, err := kf.all()
	if err != nil {
		return err
	}
	var paths []string
	if st, err := os.Stat(target); err != nil {
		return err
	} else if st.IsDir() {
		r, err := wal.Inspect(target)
		if err != nil {
			return err
		}
		for _, s := range r.Segments {
			paths = append(paths, filepath.Join(target, s.Name))
		}
	} else {
		paths = []string{target}
	}
	enc := json.NewEncoder(out)
	emit := func(d dumpRecord, payload []byte) error {
		if *asJSON {
			d.Text, d.Base64 = textOrBase64(payload)
			return enc.Encode(d)
		}
		kind := ""
		if d.Gap {
			kind = " gap (ids lost to damage, already counted)"
		}
		item := ""
		if d.Item != nil {
			item = fmt.Sprintf(" item %d", *d.Item)
		}
		if d.Key != nil {
			item += fmt.Sprintf(" (key %d)", *d.Key)
		} else if d.Keys != nil {
			item += fmt.Sprintf(" keys %v", d.Keys)
		}
		_, err := fmt.Fprintf(out, "%s id %d%s @%d %s %s %dB%s: %s\n", d.Segment, d.ID, item, d.Offset,
			d.Time.UTC().Format(time.RFC3339Nano), d.Compression, d.Stored, kind, quote(payload))
		return err
	}
	for _, p := range paths {
		damage, err := wal.ReadSegment(p, func(r wal.Record) error {
			if r.ID < *from {
				return nil
			}
			d := dumpRecord{Segment: filepath.Base(p), ID: r.ID, Time: r.Time, Offset: r.Offset, Compression: r.Compression, Stored: r.StoredLen, Gap: r.Gap}
			if !*items || r.Gap {
				d.Keys = r.Keys
				return emit(d, r.Payload)
			}
			n := 0
			return wal.ForEachItem(r.Payload, func(item []byte) error {
				i := n
				n++
				d.Item = &i
				if i < len(r.Keys) {
					k := r.Keys[i]
					d.Key = &k
				}
				return emit(d, item)
			})
		}, keys...)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if damage != nil {
			fmt.Fprintf(os.Stderr, "vinewal: %s: damaged at offset %d: %s (the damaged records not shown)\n", p, damage.Offset, damage.Reason)
		}
	}
	return nil
}

// textOrBase64 gives a payload to JSON as text when it is valid UTF-8,
// as base64 otherwise.
func textOrBase64(p []byte) (*string, []byte) {
	if utf8.Valid(p) {
		s := string(p)
		return &s, nil
	}
	return nil, p
}

// quote renders a payload for the text dump: printable text as is (up to
// 200 bytes), anything else Go-quoted.
func quote(p []byte) string {
	const max = 200
	cut := ""
	if len(p) > max {
		p, cut = p[:max], fmt.Sprintf("... (%d bytes)", len(p))
	}
	s := string(p)
	if utf8.ValidString(s) && strconv.CanBackquote(s) {
		return s + cut
	}
	return strconv.Quote(s) + cut
}

func repair(args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("repair", flag.ContinueOnError)
	kf := addKeyFlags(fs)
	dir, err := oneDir(fs, args)
	if err != nil {
		return err
	}
	opts, err := kf.options(wal.Options{})
	if err != nil {
		return err
	}
	before, err := wal.Inspect(dir)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.Logger = logger
	st, err := wal.Repair(dir, opts)
	if err != nil {
		if errors.Is(err, wal.ErrLocked) {
			return fmt.Errorf("%w (stop the process using it first)", err)
		}
		return err
	}
	if !before.Damaged() && st.Corrupt == 0 {
		fmt.Fprintf(out, "nothing to repair: %d segments intact\n", st.Segments)
		return nil
	}
	printLosses(out, before)
	fmt.Fprintf(out, "repaired: %d records lost, %d files moved aside as *.corrupt, %d segments kept\n", st.Corrupt, st.Quarantined, st.Segments)
	return nil
}
