// Command modproxy builds a Go module proxy, in the directory layout that
// GOPROXY=file://DIR reads, from this repository's own history: for every
// release it writes the core module and each contrib module as the go
// command would download them from a tag (list, .info, .mod, .zip; the zip
// as golang.org/x/mod/zip lays it out, so go.sum hashes are the ones a
// download of the real tag gives).
//
// Releases come from the manifest (the file "releases" at the repository
// root: one "vX.Y.Z <commit>" per line), not from tags, since tags may not
// travel with a clone: a tag that is present must name the manifest's
// commit. -add vX.Y.Z=REV publishes one more version of the root module
// alone (make release tidies the contrib modules against it before it
// commits and tags them).
//
//	go run . -repo ../.. -out DIR [-add v0.2.0=HEAD]
//	GOPROXY=file://DIR,https://proxy.golang.org GONOSUMDB=github.com/vineroute go mod tidy
package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
)

func main() {
	repo := flag.String("repo", ".", "the repository (any git work tree of it)")
	out := flag.String("out", "", "the proxy directory to write (required)")
	manifest := flag.String("releases", "", "the release manifest (default: REPO/releases)")
	var adds []string
	flag.Func("add", "also publish `VERSION=REV` (repeatable)", func(s string) error {
		adds = append(adds, s)
		return nil
	})
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "modproxy: -out is required")
		os.Exit(2)
	}
	if *manifest == "" {
		*manifest = filepath.Join(*repo, "releases")
	}
	if err := run(*repo, *out, *manifest, adds); err != nil {
		fmt.Fprintln(os.Stderr, "modproxy:", err)
		os.Exit(1)
	}
}

// release is one version of the repository: every module in it at commit.
type release struct {
	version string
	commit  string
	fromTag bool // the manifest's commit was checked against a tag
	// coreOnly publishes the root module alone: an -add release, whose
	// contrib modules are about to change (make release tidies them
	// against it), so that no module cache keeps a contrib zip that the
	// release commit would then contradict.
	coreOnly bool
}

func run(repo, out string, manifest string, adds []string) error {
	rels, err := readManifest(repo, manifest)
	if err != nil {
		return err
	}
	for _, a := range adds {
		v, rev, ok := strings.Cut(a, "=")
		if !ok || !semver.IsValid(v) || semver.Canonical(v) != v {
			return fmt.Errorf("-add %q: want vX.Y.Z=REV", a)
		}
		c, err := git(repo, "rev-parse", "--verify", rev+"^{commit}")
		if err != nil {
			return fmt.Errorf("-add %s: %w", a, err)
		}
		rels = append(rels, release{version: v, commit: c, coreOnly: true})
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	versions := make(map[string][]string) // module path → versions
	for _, r := range rels {
		src := "no tag: the manifest's commit"
		switch {
		case r.fromTag:
			src = "its tag agrees"
		case r.coreOnly:
			src = "-add, the root module only"
		}
		fmt.Fprintf(os.Stderr, "modproxy: %s = %.12s (%s)\n", r.version, r.commit, src)
		mods, err := modulesAt(repo, r.commit)
		if err != nil {
			return fmt.Errorf("%s (%s): %w", r.version, r.commit, err)
		}
		if r.coreOnly {
			mods = []string{""}
		}
		for _, dir := range mods {
			p, err := publish(repo, out, r, dir)
			if err != nil {
				return fmt.Errorf("%s of %s (%s): %w", r.version, moduleLabel(dir), r.commit, err)
			}
			versions[p] = append(versions[p], r.version)
		}
	}
	for p, vs := range versions {
		semver.Sort(vs)
		vs = slices.Compact(vs)
		dir, err := escapedDir(out, p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "list"), []byte(strings.Join(vs, "\n")+"\n"), 0o644); err != nil {
			return err
		}
		fmt.Printf("%s %s\n", p, strings.Join(vs, " "))
	}
	return nil
}

// readManifest reads "vX.Y.Z COMMIT" lines ('#' starts a comment) and checks
// each against its tag when the tag is present.
func readManifest(repo, name string) ([]release, error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rels []release
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 || !semver.IsValid(fields[0]) || semver.Canonical(fields[0]) != fields[0] {
			return nil, fmt.Errorf("%s:%d: want \"vX.Y.Z COMMIT\", got %q", name, n, sc.Text())
		}
		v := fields[0]
		c, err := git(repo, "rev-parse", "--verify", fields[1]+"^{commit}")
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: commit %s is not in this clone: %w", name, n, v, fields[1], err)
		}
		r := release{version: v, commit: c}
		if t, err := git(repo, "rev-parse", "--verify", "--quiet", "refs/tags/"+v+"^{commit}"); err == nil {
			if t != c {
				return nil, fmt.Errorf("%s:%d: tag %s is commit %s, the manifest says %s", name, n, v, t, c)
			}
			r.fromTag = true
		}
		rels = append(rels, r)
	}
	return rels, sc.Err()
}

// modulesAt lists the module directories released from commit: the root
// and every contrib/NAME with a go.mod.
func modulesAt(repo, commit string) ([]string, error) {
	ls, err := git(repo, "ls-tree", "-r", "--name-only", commit, "--", "go.mod", "contrib")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, f := range strings.Split(ls, "\n") {
		switch {
		case f == "go.mod":
			dirs = append(dirs, "")
		case strings.HasPrefix(f, "contrib/") && strings.Count(f, "/") == 2 && path.Base(f) == "go.mod":
			dirs = append(dirs, path.Dir(f))
		}
	}
	if !slices.Contains(dirs, "") {
		return nil, errors.New("no go.mod at the root")
	}
	return dirs, nil
}

func moduleLabel(dir string) string {
	if dir == "" {
		return "the root module"
	}
	return dir
}

// publish writes dir's module at r into the proxy and returns its path.
func publish(repo, out string, r release, dir string) (string, error) {
	gomodName := "go.mod"
	if dir != "" {
		gomodName = dir + "/go.mod"
	}
	gomod, err := gitBytes(repo, "show", r.commit+":"+gomodName)
	if err != nil {
		return "", err
	}
	modPath := modfile.ModulePath(gomod)
	if modPath == "" {
		return "", fmt.Errorf("%s has no module line", gomodName)
	}
	m := module.Version{Path: modPath, Version: r.version}
	if err := module.Check(m.Path, m.Version); err != nil {
		return "", err
	}
	vdir, err := escapedDir(out, modPath)
	if err != nil {
		return "", err
	}
	ev, err := module.EscapeVersion(r.version)
	if err != nil {
		return "", err
	}
	base := filepath.Join(vdir, ev)

	files, err := filesAt(repo, r.commit, dir)
	if err != nil {
		return "", err
	}
	var zbuf bytes.Buffer
	if err := modzip.Create(&zbuf, m, files); err != nil {
		return "", err
	}
	when, err := git(repo, "log", "-1", "--format=%cI", r.commit)
	if err != nil {
		return "", err
	}
	t, err := time.Parse(time.RFC3339, when)
	if err != nil {
		return "", err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{r.version, t.UTC()})
	if err != nil {
		return "", err
	}
	for ext, data := range map[string][]byte{".mod": gomod, ".zip": zbuf.Bytes(), ".info": info} {
		if err := os.WriteFile(base+ext, data, 0o644); err != nil {
			return "", err
		}
	}
	return modPath, nil
}

func escapedDir(out, modPath string) (string, error) {
	ep, err := module.EscapePath(modPath)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(out, filepath.FromSlash(ep), "@v")
	return dir, os.MkdirAll(dir, 0o755)
}

// filesAt lists the files of dir at commit as git archive gives them (so
// .gitattributes export-ignore applies, as for a download of the tag), with
// the root LICENSE for a module that has none of its own, as the go command
// does. golang.org/x/mod/zip.CreateFromVCS does the same but only for a
// repository whose .git is a directory, not a linked work tree.
func filesAt(repo, commit, dir string) ([]modzip.File, error) {
	args := []string{"-c", "core.autocrlf=input", "-c", "core.eol=lf", "archive", "--format=zip", commit}
	prefix := ""
	if dir != "" {
		args = append(args, dir)
		prefix = dir + "/"
	}
	cmd := exec.Command("git", args...)
	cmd.Dir = repo
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git archive: %w: %s", err, stderr.String())
	}
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		return nil, err
	}
	var files []modzip.File
	haveLicense := false
	for _, zf := range zr.File {
		if !strings.HasPrefix(zf.Name, prefix) || strings.HasSuffix(zf.Name, "/") {
			continue
		}
		name := strings.TrimPrefix(zf.Name, prefix)
		files = append(files, archived{name: name, f: zf})
		haveLicense = haveLicense || name == "LICENSE"
	}
	if !haveLicense && dir != "" {
		if lic, err := gitBytes(repo, "cat-file", "blob", commit+":LICENSE"); err == nil {
			files = append(files, blob{name: "LICENSE", data: lic})
		}
	}
	return files, nil
}

// archived is a file of git archive's zip, as a golang.org/x/mod/zip.File.
type archived struct {
	name string
	f    *zip.File
}

func (a archived) Path() string                 { return a.name }
func (a archived) Lstat() (os.FileInfo, error)  { return a.f.FileInfo(), nil }
func (a archived) Open() (io.ReadCloser, error) { return a.f.Open() }

// blob is a file held in memory, as a golang.org/x/mod/zip.File.
type blob struct {
	name string
	data []byte
}

func (b blob) Path() string                 { return b.name }
func (b blob) Lstat() (os.FileInfo, error)  { return blobInfo(b), nil }
func (b blob) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.data)), nil }

type blobInfo blob

func (b blobInfo) Name() string       { return path.Base(b.name) }
func (b blobInfo) Size() int64        { return int64(len(b.data)) }
func (b blobInfo) Mode() fs.FileMode  { return 0o644 }
func (b blobInfo) ModTime() time.Time { return time.Time{} }
func (b blobInfo) IsDir() bool        { return false }
func (b blobInfo) Sys() any           { return nil }

// git runs git in repo and returns its output without the final newline.
func git(repo string, args ...string) (string, error) {
	out, err := gitBytes(repo, args...)
	return strings.TrimSuffix(string(out), "\n"), err
}

// gitBytes runs git in repo and returns its output as it is.
func gitBytes(repo string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = repo
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
