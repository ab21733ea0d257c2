#!/usr/bin/env bash
# Takes the README's screenshots of the sign-in page, light and dark, with
# headless Chromium (Debian's chromium, or CHROMIUM=path): run it again when
# the pages change. They land in docs/.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p docs
PWL_SCREENSHOTS="$PWD/docs" go test -count=1 -run '^TestScreenshots$' .
ls -l docs/signin-light.png docs/signin-dark.png
