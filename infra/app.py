"""CDK entry point: `python app.py` (or `cdk synth`) writes the template to cdk.out/.

Context: `stage` (dev or prod, default dev), `assetPath` (the Lambda bundle folder; default
build/lambda, which scripts/build-lambda makes: without it the synth stops with an error,
as src/ alone has none of the dependencies; `-c assetPath=../src` for a template-only check).
"""

from __future__ import annotations

import os

import aws_cdk as cdk
from notify_relay_infra.stack import build_app

if __name__ == "__main__":
    # the cdk CLI sets CDK_OUTDIR; run directly (python app.py), write to ./cdk.out
    app = cdk.App(outdir=os.environ.get("CDK_OUTDIR", "cdk.out"))
    build_app(app)
    app.synth()
