package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/vineroute/vinequeue/wal"
)

// dlq runs a dead-letter subcommand and returns the exit status.
func dlq(args []string, out, errOut io.Writer) (int, error) {
	if len(args) == 0 {
		return 2, fmt.Errorf("%w: dlq needs a subcommand", errUsage)
	}
	switch args[0] {
	case "list":
		return dlqList(args[1:], out)
	case "dump":
		return dlqDump(args[1:], out, errOut)
	case "requeue":
		return dlqMove(args[0], args[1:], out, errOut)
	case "purge":
		return dlqMove(args[0], args[1:], out, errOut)
	}
	return 2, fmt.Errorf("%w: unknown dlq subcommand %q", errUsage, args[0])
}

// dirAndIDs parses DIR [ID...].
func dirAndIDs(fs *flag.FlagSet, args []string) (string, []uint64, error) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return "", nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() < 1 {
		return "", nil, fmt.Errorf("%w: want a directory", errUsage)
	}
	var ids []uint64
	for _, a := range fs.Args()[1:] {
		id, err := strconv.ParseUint(a, 10, 64)
		if err != nil || id == 0 {
			return "", nil, fmt.Errorf("%w: %q is not a dead-letter id", errUsage, a)
		}
		ids = append(ids, id)
	}
	return fs.Arg(0), ids, nil
}

// dlqEntry is the JSON shape of one dead letter in a listing.
type dlqEntry struct {
	ID       uint64    `json:"id"`
	Time     time.Time `json:"time"`
	Items    int       `json:"items"`
	Bytes    int       `json:"bytes"`
	FileSize int64     `json:"file_bytes"`
	Attempts int       `json:"attempts"`
	Records  []uint64  `json:"records,omitempty"`
	Reason   string    `json:"reason"`
	Damage   string    `json:"damage,omitempty"`
	// Keys are the distinct keys of a keyed dead letter (a queue with
	// ParkKeys); Parked marks items parked behind an earlier dead letter
	// of their key.
	Keys   []uint64 `json:"keys,omitempty"`
	Parked bool     `json:"parked,omitempty"`
}

// distinctKeys is keys sorted, each once.
func distinctKeys(keys []uint64) []uint64 {
	return slices.Compact(slices.Sorted(slices.Values(keys)))
}

// keysNote describes a keyed dead letter in one line (empty otherwise).
func keysNote(d wal.DeadLetter) string {
	if len(d.Keys) == 0 && !d.Parked {
		return ""
	}
	what := "holds"
	if d.Parked {
		what = "parked, behind an earlier dead letter of"
	}
	return fmt.Sprintf("%s keys %v", what, distinctKeys(d.Keys))
}

func dlqList(args []string, out io.Writer) (int, error) {
	fs := flag.NewFlagSet("dlq list", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "one JSON object per line")
	kf := addKeyFlags(fs)
	dir, ids, err := dirAndIDs(fs, args)
	if err != nil {
		return 2, err
	}
	if len(ids) > 0 {
		return 2, fmt.Errorf("%w: dlq list takes no ids", errUsage)
	}
	keys, err := kf.all()
	if err != nil {
		return 2, err
	}
	dls, err := wal.ListDeadLetters(dir, keys...)
	if err != nil {
		return 2, err
	}
	damaged := 0
	enc := json.NewEncoder(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	if !*asJSON {
		fmt.Fprintln(tw, "ID\tTIME\tITEMS\tBYTES\tATTEMPTS\tREASON")
	}
	for _, d := range dls {
		e := dlqEntry{ID: d.ID, Time: d.Time, Items: d.Items, Bytes: d.Bytes, FileSize: d.FileSize, Attempts: d.Attempts, Records: d.Records, Reason: d.Reason,
			Keys: distinctKeys(d.Keys), Parked: d.Parked}
		if d.Damage != nil {
			damaged++
			e.Damage = d.Damage.String()
		}
		if *asJSON {
			if err := enc.Encode(e); err != nil {
				return 2, err
			}
			continue
		}
		if d.Damage != nil {
			fmt.Fprintf(tw, "%d\t-\t-\t-\t-\tDAMAGED: %s\n", d.ID, d.Damage)
			continue
		}
		reason := oneLine(d.Reason)
		if note := keysNote(d); note != "" {
			reason = "[" + note + "] " + reason
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s\n", d.ID, d.Time.UTC().Format(time.RFC3339), d.Items, d.Bytes, d.Attempts, reason)
	}
	if !*asJSON {
		tw.Flush()
		fmt.Fprintf(out, "%d dead letters\n", len(dls))
	}
	if damaged > 0 {
		if !*asJSON {
			fmt.Fprintf(out, "%d damaged: the next start (or `vinewal repair %s`) moves them aside and counts them lost\n", damaged, dir)
		}
		return 1, nil
	}
	return 0, nil
}

// oneLine keeps a reason on one table row.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:120]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "..."
	}
	return s
}

// dlqItem is the JSON shape of one dead-lettered item.
type dlqItem struct {
	ID     uint64  `json:"id"`
	Item   int     `json:"item"`
	Text   *string `json:"text,omitempty"`   // the item, when valid UTF-8
	Base64 []byte  `json:"base64,omitempty"` // the item otherwise
}

func dlqDump(args []string, out, errOut io.Writer) (int, error) {
	fs := flag.NewFlagSet("dlq dump", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "one JSON object per item")
	kf := addKeyFlags(fs)
	dir, ids, err := dirAndIDs(fs, args)
	if err != nil {
		return 2, err
	}
	keys, err := kf.all()
	if err != nil {
		return 2, err
	}
	if len(ids) == 0 {
		return 2, fmt.Errorf("%w: dlq dump needs at least one id", errUsage)
	}
	enc := json.NewEncoder(out)
	code := 0
	for _, id := range ids {
		d, payload, err := wal.ReadDeadLetter(dir, id, keys...)
		if errors.Is(err, wal.ErrNotFound) || errors.Is(err, wal.ErrCorrupt) {
			fmt.Fprintln(errOut, "vinewal:", err)
			code = 1
			continue
		}
		if err != nil {
			return 2, err
		}
		if !*asJSON {
			fmt.Fprintf(out, "dead letter %d: %s, %d items, %d bytes, %d attempts, records %v, reason %q\n",
				d.ID, d.Time.UTC().Format(time.RFC3339Nano), d.Items, d.Bytes, d.Attempts, d.Records, d.Reason)
			if note := keysNote(d); note != "" {
				fmt.Fprintf(out, "  %s\n", note)
			}
		}
		n := 0
		err = wal.ForEachItem(payload, func(item []byte) error {
			i := n
			n++
			if *asJSON {
				e := dlqItem{ID: id, Item: i}
				e.Text, e.Base64 = textOrBase64(item)
				return enc.Encode(e)
			}
			if len(d.Keys) > i {
				_, err := fmt.Fprintf(out, "  item %d (key %d): %s\n", i, d.Keys[i], quote(item))
				return err
			}
			_, err := fmt.Fprintf(out, "  item %d: %s\n", i, quote(item))
			return err
		})
		if err != nil {
			return 2, err
		}
	}
	return code, nil
}

// dlqMove runs requeue or purge.
func dlqMove(cmd string, args []string, out, errOut io.Writer) (int, error) {
	fs := flag.NewFlagSet("dlq "+cmd, flag.ContinueOnError)
	all := fs.Bool("all", false, "purge every dead letter")
	kf := addKeyFlags(fs)
	dir, ids, err := dirAndIDs(fs, args)
	if err != nil {
		return 2, err
	}
	if cmd == "requeue" && kf.keyFile == "" && len(kf.decryptKeys) > 0 {
		// Requeueing writes the items back as records: with only older
		// keys they would be written in the clear.
		return 2, fmt.Errorf("%w: dlq requeue writes records: give -key-file, the key to write them under", errUsage)
	}
	opts, err := kf.options(wal.Options{})
	if err != nil {
		return 2, err
	}
	if cmd == "purge" && (len(ids) == 0) == !*all {
		return 2, fmt.Errorf("%w: dlq purge takes ids, or -all", errUsage)
	}
	if cmd == "requeue" && *all {
		return 2, fmt.Errorf("%w: dlq requeue requeues every dead letter when given no id", errUsage)
	}
	logger := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.Logger = logger
	var n int
	if cmd == "purge" {
		n, err = wal.PurgeDeadLetters(dir, opts, ids...)
	} else {
		n, err = wal.RequeueDeadLetters(dir, opts, ids...)
	}
	code := 0
	switch {
	case errors.Is(err, wal.ErrNotFound):
		fmt.Fprintln(errOut, "vinewal:", err)
		code = 1
	case errors.Is(err, wal.ErrKeyedDeadLetter):
		// Refused whole, nothing moved: the message says what to do.
		fmt.Fprintln(errOut, "vinewal:", err)
		return 1, nil
	case errors.Is(err, wal.ErrLocked):
		return 2, fmt.Errorf("%w (stop the process using it first)", err)
	case err != nil:
		return 2, err
	}
	if cmd == "purge" {
		fmt.Fprintf(out, "purged %d dead letters\n", n)
	} else {
		fmt.Fprintf(out, "requeued %d dead letters into the log; the next start replays them\n", n)
	}
	return code, nil
}
