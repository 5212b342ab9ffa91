"""Echo written for Knative's ``func`` Python template (func-python's cloudevent middleware), unchanged.

This file imports nothing from knflow: the same module is served by ``func_python.cloudevent.serve(new)``
and by ``python -m functions.runtime.host functions.examples.knative_echo``.
"""

from cloudevents.core.v1.event import CloudEvent


def new():
    """Knative's runtime calls this once to make the function instance."""
    return Function()


class Function:
    def __init__(self):
        self.started = False

    def start(self, cfg):
        self.started = True

    def stop(self):
        self.started = False

    def alive(self):
        return True, "alive"

    def ready(self):
        return self.started, "ready" if self.started else "not started"

    async def handle(self, scope, receive, send):
        """Reply with an event that carries the request event's data."""
        event = scope["event"]
        reply = CloudEvent(
            {
                "type": "dev.knative.function.response",
                "source": "/knative/echo",
                "id": "reply-" + event.get_id(),
                "datacontenttype": "application/json",
            },
            event.get_data(),
        )
        await send(reply)
