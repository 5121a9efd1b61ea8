#!/usr/bin/env bash
# release.sh vX.Y.Z — release the core and every contrib module at one
# version (make release VERSION=vX.Y.Z):
#
#   1. contrib/*: require github.com/vineroute/vinequeue vX.Y.Z (no
#      replace), tidied against the core at HEAD published as vX.Y.Z in the
#      local proxy; committed: that commit is the release.
#   2. tags vX.Y.Z and contrib/NAME/vX.Y.Z on it (RELEASE_TAGS=0: none;
#      they are printed to create later).
#   3. releases: "vX.Y.Z COMMIT" appended, since tags may not travel with a
#      clone; examples/* and benchmarks: require the project's modules
#      (core and contrib) at vX.Y.Z, tidied; committed.
#
# The core's zip at the release commit equals the one at HEAD that step 1
# tidied against: step 1 changes only files of other modules (contrib/*),
# which the core's zip leaves out.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
GO=${GO:-go}
VERSION=${1:-}
CORE=github.com/vineroute/vinequeue

if ! [[ "$VERSION" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
	echo "usage: $0 vX.Y.Z" >&2
	exit 2
fi
# --tidy DIR...: (run under scripts/withproxy.sh) each DIR requires this
# project's modules at VERSION, with no replace, and is tidied.
if [ "${2:-}" = --tidy ]; then
	for d in "${@:3}"; do
		for m in $(sed -nE "s|^[[:space:]]*(require[[:space:]]+)?($CORE(/[^[:space:]]+)?)[[:space:]]+v.*|\2|p" "$d/go.mod" | sort -u); do
			(cd "$d" && "$GO" mod edit -require="$m@$VERSION" -dropreplace="$m")
		done
		echo "release: tidy $d"
		(cd "$d" && GOWORK=off "$GO" mod tidy)
	done
	exit 0
fi

if [ -n "$(git status --porcelain)" ]; then
	echo "release: the work tree is not clean; commit first" >&2
	exit 1
fi
if grep -qE "^$VERSION[[:space:]]" releases 2>/dev/null || git rev-parse -q --verify "refs/tags/$VERSION" >/dev/null; then
	echo "release: $VERSION exists already; a version is never released twice (module caches and go.sum files keep the first)" >&2
	exit 1
fi

# Step 1 covers the modules that depend on the core alone; benchmarks and
# examples may require contrib modules too, which exist at VERSION only
# once the release commit does: they are tidied in step 3.
mods=()
for d in contrib/*/; do
	[ -f "$d/go.mod" ] && mods+=("${d%/}")
done
MODPROXY_ADD="$VERSION=HEAD" scripts/withproxy.sh "$0" "$VERSION" --tidy "${mods[@]}"
git add -A contrib
git commit -q -m "release $VERSION: contrib requires the core at $VERSION"
commit=$(git rev-parse HEAD)

tags=("$VERSION")
for d in contrib/*/; do
	[ -f "$d/go.mod" ] && tags+=("${d%/}/$VERSION")
done
if [ "${RELEASE_TAGS:-1}" = 0 ]; then
	echo "release: no tags made (RELEASE_TAGS=0); to make them:"
	for t in "${tags[@]}"; do echo "  git tag $t $commit"; done
else
	for t in "${tags[@]}"; do git tag "$t" "$commit"; done
	echo "release: tagged ${tags[*]} at $commit"
fi

echo "$VERSION $commit" >>releases
users=()
for d in examples/*/ benchmarks/; do
	[ -f "$d/go.mod" ] && users+=("${d%/}")
done
[ ${#users[@]} -gt 0 ] && scripts/withproxy.sh "$0" "$VERSION" --tidy "${users[@]}"
git add releases
[ ${#users[@]} -gt 0 ] && git add -A examples benchmarks
git commit -q -m "releases: $VERSION is $commit; examples and benchmarks require it"
echo "release: $VERSION is $commit (manifest: releases); push the tags with the branch"
