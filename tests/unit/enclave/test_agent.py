"""The agent protocol as a pure state machine: framing, descriptors, conversation states."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inclavare.enclave import agent


def pair() -> tuple[agent.Connection, agent.Connection]:
    return agent.Connection(agent.CLIENT), agent.Connection(agent.AGENT)


def test_exec_conversation_with_signals_and_exit() -> None:
    client, server = pair()
    request = agent.Exec(("sh", "-c", "echo $1", "a b\nc"), ("A=1 2",), "/tmp", (7, 8, 9))
    (received,) = server.receive_data(client.send(request), [10, 11, 12])
    assert received == request
    assert isinstance(received, agent.Exec) and received.fds == (10, 11, 12)
    assert client.receive_data(server.send(agent.Started(42))) == [agent.Started(42)]
    assert server.receive_data(client.send(agent.Signal(15))) == [agent.Signal(15)]
    # a failed signal is answered with an error; the process goes on
    assert client.receive_data(server.send(agent.Error("no such process"))) == [
        agent.Error("no such process")
    ]
    assert client.state == server.state == agent.RUNNING
    assert client.receive_data(server.send(agent.Exited(143))) == [agent.Exited(143)]
    assert client.state == server.state == agent.FINISHED
    with pytest.raises(agent.AgentProtocolError):
        client.send(agent.Signal(9))


def test_failed_exec_returns_to_idle_and_reports_work() -> None:
    client, server = pair()
    server.receive_data(client.send(agent.Exec(("x",), (), "/", (0, 1, 2))), [3, 4, 5])
    client.receive_data(server.send(agent.Error("exec: not found")))
    assert client.state == server.state == agent.IDLE
    target = bytes(range(256)) * 2
    (request,) = server.receive_data(client.send(agent.ReportRequest(target, b"\x01\x02")))
    assert request == agent.ReportRequest(target, b"\x01\x02")
    (reply,) = client.receive_data(server.send(agent.Report(bytes(432))))
    assert reply == agent.Report(bytes(432))
    server.receive_data(client.send(agent.InfoRequest()))
    (info,) = client.receive_data(server.send(agent.Info({"type": "sim"})))
    assert info == agent.Info({"type": "sim"})


def test_messages_split_anywhere_and_descriptors_arriving_first() -> None:
    client, server = pair()
    data = client.send(agent.Exec(("prog", "arg"), (), "/", (0, 1, 2)))
    messages: list[agent.Message] = []
    for index, byte in enumerate(data):
        messages += server.receive_data(bytes([byte]), [20, 21, 22] if index == 0 else [])
    assert messages == [agent.Exec(("prog", "arg"), (), "/", (20, 21, 22))]
    assert server.pending_fds == []


def test_out_of_turn_and_malformed_messages_are_refused() -> None:
    client, server = pair()
    with pytest.raises(agent.AgentProtocolError, match="may not send 'started'"):
        client.receive_data(server.send(agent.Started(1)))
    client, server = pair()
    with pytest.raises(agent.AgentProtocolError, match="without its 3 descriptors"):
        server.receive_data(client.send(agent.Exec(("a",), (), "/", (0, 1, 2))), [5])
    assert server.pending_fds == [5]  # left for the caller to close

    def frame(document: bytes) -> bytes:
        return len(document).to_bytes(4, "big") + document

    for document, problem in (
        (b"[]", "JSON object with a type"),
        (b'{"type": "exec", "argv": [], "env": [], "fds": 3}', "argv is empty"),
        (b'{"type": "signal", "signal": 0}', "no signal 0"),
        (b'{"type": "report", "target_info": "00"}', "target_info must be hex"),
        (b'{"type": "launch"}', "may not send a message of type 'launch'"),
        (b"not json", "not JSON"),
    ):
        _, server = pair()
        with pytest.raises(agent.AgentProtocolError, match=problem):
            server.receive_data(frame(document), [0, 1, 2])
    _, server = pair()
    with pytest.raises(agent.AgentProtocolError, match="exceeds"):
        server.receive_data((agent.MAX_MESSAGE + 1).to_bytes(4, "big"))


def test_end_of_file() -> None:
    client, server = pair()
    assert server.receive_data(b"") == []
    assert server.closed
    client, server = pair()
    with pytest.raises(agent.AgentProtocolError, match="middle of a message"):
        server.receive_data(client.send(agent.InfoRequest())[:3])
        server.receive_data(b"")


@given(
    st.lists(st.text().filter(lambda text: "\0" not in text), min_size=1, max_size=8),
    st.lists(st.text().filter(lambda text: "\0" not in text), max_size=8),
)
def test_argv_and_env_travel_unchanged(argv: list[str], env: list[str]) -> None:
    client, server = pair()
    request = agent.Exec(tuple(argv), tuple(env), "/", (0, 1, 2))
    assert server.receive_data(client.send(request), [3, 4, 5]) == [request]


@given(st.binary(max_size=300))
def test_garbage_never_escapes_as_another_exception(data: bytes) -> None:
    _, server = pair()
    try:
        server.receive_data(data, [0, 1, 2])
    except agent.AgentProtocolError:
        pass
