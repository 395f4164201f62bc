"""deploy/cloudfront.yaml (cfn-lint runs in test_cloudformation.py): the 302 is never cached."""

from __future__ import annotations

import pytest

from tests.deploy.templates import CDN_TEMPLATE, Resolver, load

PARAMS = {"WebsiteEndpoint": "images.s3-website-eu-west-1.amazonaws.com"}


@pytest.fixture(scope="module")
def template() -> dict:
    return load(CDN_TEMPLATE)


def props(template, name):
    return Resolver(template, PARAMS).resolve(template["Resources"][name]["Properties"])


def test_cache_policy_caches_only_what_the_origin_says_to(template):
    config = props(template, "ImageCachePolicy")["CachePolicyConfig"]
    # The website's 302 carries no Cache-Control: with a default TTL of 0 it is never cached.
    assert (config["MinTTL"], config["DefaultTTL"]) == (0, 0)
    # Derived images say max-age=31536000: the maximum lets them stay that long.
    assert config["MaxTTL"] >= 31536000
    key = config["ParametersInCacheKeyAndForwardedToOrigin"]
    assert key["QueryStringsConfig"] == {"QueryStringBehavior": "none"}
    assert key["HeadersConfig"] == {"HeaderBehavior": "none"}  # the website endpoint picks the bucket by Host


def test_origin_is_the_website_endpoint_over_http(template):
    config = props(template, "Distribution")["DistributionConfig"]
    origin, = config["Origins"]
    assert origin["DomainName"] == PARAMS["WebsiteEndpoint"]
    # A custom origin (not the REST endpoint with OAC, which has no RoutingRules), HTTP only.
    assert "S3OriginConfig" not in origin
    assert origin["CustomOriginConfig"]["OriginProtocolPolicy"] == "http-only"
    behaviour = config["DefaultCacheBehavior"]
    assert behaviour["CachePolicyId"] == "<Ref ImageCachePolicy>"
    assert behaviour["AllowedMethods"] == ["GET", "HEAD"]
    assert "CacheBehaviors" not in config
