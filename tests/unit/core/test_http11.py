"""The small HTTP server refuses to listen beyond this machine."""

import pytest

from capture_ext.core.http11 import HTTPServer, Response, is_wildcard


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "0:0:0:0:0:0:0:0"])
def test_unspecified_addresses_are_wildcards(host):
    assert is_wildcard(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "169.254.100.1", "sandbox.localdomain", "localhost"])
def test_specific_addresses_and_names_are_not(host):
    assert not is_wildcard(host)


async def test_the_server_refuses_to_bind_a_wildcard():
    async def handler(request):
        return Response(200)

    server = HTTPServer(handler, 1024)
    with pytest.raises(ValueError, match="refusing to listen"):
        await server.start("0.0.0.0", 0)
    port = await server.start("127.0.0.1", 0)
    assert port > 0
    await server.close()
