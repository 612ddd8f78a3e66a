"""A consuming service serves HTTP while Kafka is unreachable (its subscribers keep retrying in the background)."""

import httpx

from services.credits.config import Settings
from services.credits.main import create_app
from shared.engines import free_port
from shared.testing.identity import service_headers
from shared.testing.servers import serve_in_thread


def test_credits_serves_reservations_without_a_broker(database_url: str) -> None:
    settings = Settings(app_env="dev", database_url=database_url, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    with serve_in_thread(create_app(settings)) as url:
        assert httpx.get(url + "/health/ready").status_code == 200
        response = httpx.post(
            url + "/internal/credits/no-broker-user/grants",
            json={"credits": 7, "reference": "no-broker", "reason": "test"},
            headers=service_headers("auth", "credits"),
        )
        assert response.status_code == 201, response.text
        assert response.json()["data"]["balance"] == 7
