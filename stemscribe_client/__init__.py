"""Python client of the stemscribe service: `Client` (sync) and `AsyncClient` (asyncio), on httpx.

    from stemscribe_client import Client

    with Client() as client:                      # $STEMSCRIBE_URL, $STEMSCRIBE_API_KEY
        accepted = client.submit("song.mp3", separation="demucs", quantize_grid="1/8")
        job = client.wait(accepted.job_id)        # follows the events stream
        client.download(job, "out/song")
"""

from stemscribe_client.aio import AsyncClient
from stemscribe_client.client import Client
from stemscribe_client.errors import ApiError, Gone, NotFound, ServiceUnreachable, StemscribeClientError, Unauthorized
from stemscribe_client.models import Job, JobAccepted, JobEvent, JobPage, MusicAnalysis, ResultLink

__all__ = [
    "ApiError", "AsyncClient", "Client", "Gone", "Job", "JobAccepted", "JobEvent", "JobPage", "MusicAnalysis",
    "NotFound", "ResultLink", "ServiceUnreachable", "StemscribeClientError", "Unauthorized",
]  # fmt: skip
