#!/bin/sh
# The packages' version, from git describe as the image's is, in a form dpkg
# and rpm order: v1.2.3 → 1.2.3, v1.2.3-4-gabc1234 → 1.2.3+4.gabc1234, no tag
# → 0.0.0+gabc1234; uncommitted changes add "dirty".
desc=$(git describe --tags --always --dirty --abbrev=7 2>/dev/null) || { echo 0.0.0+unknown; exit 0; }
if git describe --tags --abbrev=0 >/dev/null 2>&1; then
	v=$(echo "$desc" | sed -E 's/^v//; s/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/; s/-dirty$/.dirty/')
	case $v in *+*) ;; *.dirty) v="${v%.dirty}+dirty" ;; esac
else
	v="0.0.0+g$(echo "$desc" | sed -E 's/-dirty$/.dirty/')"
fi
echo "$v"
