"""`bcdi-recon fetch`: a service result out of Tiled as the CXI file `reconstruct` writes (through the Tiled client)."""
from __future__ import annotations

import argparse
import sys

HELP = "write a service job's result from Tiled as a CXI file (the layout `reconstruct` writes)"

DESCRIPTION = """\
Finds the result container of JOB (a job id from the gateway, or the container's Tiled path) under
reconstructions/ on the Tiled server, reads its object, support and cropped intensity with the Tiled client and
writes them, with the model, parameters, LLKs, timings and crop offsets, as a CXI file readable by PyNX and silx.
The server and key come from --tiled-url / --api-key or BCDI_TILED_URL / BCDI_TILED_API_KEY; a read-only
(viewer) key is enough."""

EPILOG = """\
examples:
  bcdi-recon fetch 3f2a9c1e77aa4c1b9d3e0123456789ab --out scan1.cxi --tiled-url http://tiled:8000
  BCDI_TILED_URL=http://127.0.0.1:8010 BCDI_TILED_API_KEY=... bcdi-recon fetch JOB_ID --out result.cxi
  bcdi-recon fetch reconstructions/PtNP/PtNP_0001/1.1/JOB_ID --out result.cxi"""


def register(subparsers) -> None:
    p = subparsers.add_parser("fetch", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", metavar="JOB", help="job id (32 hex characters) or Tiled path of the result container")
    p.add_argument("--out", required=True, help="output CXI file (written atomically)")
    p.add_argument("--tiled-url", help="Tiled server (default: BCDI_TILED_URL)")
    p.add_argument("--api-key", help="Tiled API key, read-only is enough (default: BCDI_TILED_API_KEY)")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=run)


def run(args) -> int:
    from workers.io.export import result_to_cxi
    from workers.io.formats import check_output_path
    from workers.io.tiled_store import connect

    check_output_path(args.out, suffixes=(".cxi", ".h5"))
    client = connect(args.tiled_url, args.api_key, attempts=3)
    out, path = result_to_cxi(client, args.job, args.out, command="bcdi-recon " + " ".join(sys.argv[1:]))
    if not args.quiet:
        print(f"wrote {out} from Tiled {path}")
    return 0
