"""AWS's training images of SageMaker's built-in algorithms, told apart from other images.

The SageMaker Python SDK names a built-in algorithm by its image:
``image_uris.retrieve("kmeans", region)`` is ``<account>.dkr.ecr.<region>.<domain>/kmeans:1``,
where the account is AWS's algorithm registry in that region. spotrun runs its own
built-in of the same name for such an image, and refuses the image of an algorithm it does
not have, naming it.

Names such as ``pca``, ``knn`` or ``xgboost`` are too plain to claim in every registry (a
team's own ``…/xgboost:latest`` is their container, not AWS's algorithm), so an image is
taken for AWS's only in one of AWS's algorithm registries of its region, with the ECR
domain of that region's partition. The accounts are those of the SDK's
``image_uri_config/*.json`` (sagemaker 2.257, training images of the algorithms below);
a region the SDK adds later is refused as unmapped until the table learns it, and
``algorithm = "<name>"`` in ``config.toml`` maps such an image meanwhile.

``sagemaker-xgboost`` is not here: it is also the XGBoost framework image, matched in any
registry by the defaults (``_registry``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

#: the ECR repositories of SageMaker's built-in algorithms; each is named as its algorithm
#: (and as spotrun's built-in of that algorithm, where there is one)
ALGORITHM_REPOSITORIES: tuple[str, ...] = (
    "blazingtext",
    "factorization-machines",
    "forecasting-deepar",
    "image-classification",
    "ipinsights",
    "kmeans",
    "knn",
    "lda",
    "linear-learner",
    "ntm",
    "object-detection",
    "object2vec",
    "pca",
    "randomcutforest",
    "semantic-segmentation",
    "seq2seq",
    "xgboost",  # the first XGBoost algorithm image (version "1"), before sagemaker-xgboost
)

#: region -> AWS's accounts that serve the algorithm images there (older regions have a
#: few: the algorithms were published from different accounts)
REGISTRY_ACCOUNTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        region: frozenset(accounts)
        for region, accounts in {
            "af-south-1": ("455444449433",),
            "ap-east-1": ("286214385809",),
            "ap-northeast-1": ("258307448986", "351501993468", "501404015308", "633353088612"),
            "ap-northeast-2": ("204372634319", "293181348795", "306986355934", "835164637446"),
            "ap-northeast-3": ("867004704886",),
            "ap-south-1": ("991648021394",),
            "ap-south-2": ("628508329040",),
            "ap-southeast-1": ("475088953585",),
            "ap-southeast-2": ("297031611018", "514117268639", "544295431143", "712309505854"),
            "ap-southeast-3": ("951798379941",),
            "ap-southeast-4": ("106583098589",),
            "ca-central-1": ("469771592824",),
            "ca-west-1": ("190319476487",),
            "cn-north-1": ("390948362332",),
            "cn-northwest-1": ("387376663083",),
            "eu-central-1": ("353608530281", "495149712605", "664544806723", "813361260812"),
            "eu-central-2": ("680994064768",),
            "eu-north-1": ("669576153137",),
            "eu-south-1": ("257386234256",),
            "eu-south-2": ("104374241257",),
            "eu-west-1": ("224300973850", "438346466558", "685385470294", "999678624901"),
            "eu-west-2": ("644912444149",),
            "eu-west-3": ("749696950732",),
            "il-central-1": ("898809789911",),
            "me-central-1": ("272398656194",),
            "me-south-1": ("249704162688",),
            "sa-east-1": ("855470959533",),
            "us-east-1": ("382416733822", "522234722520", "766337827248", "811284229777"),
            "us-east-2": ("404615174143", "566113047672", "825641698319", "999911452149"),
            "us-gov-east-1": ("237065988967",),
            "us-gov-west-1": ("226302683700",),
            "us-iso-east-1": ("490574956308",),
            "us-isob-east-1": ("765400339828",),
            "us-isof-east-1": ("108575199400",),
            "us-isof-south-1": ("124985052026",),
            "us-west-1": ("632365934929",),
            "us-west-2": ("156387875391", "174872318107", "266724342769", "433757028032"),
        }.items()
    }
)

#: region prefix -> ECR domain of its partition (longest prefixes first); else amazonaws.com
_PARTITION_DOMAINS = (
    ("us-isob-", "sc2s.sgov.gov"),
    ("us-isof-", "csp.hci.ic.gov"),
    ("us-iso-", "c2s.ic.gov"),
    ("cn-", "amazonaws.com.cn"),
)

# <account>.dkr.ecr.<region>.<domain>/<repository>[:tag | @digest]; tag and digest as the
# OCI distribution spec writes them
_ECR_IMAGE = re.compile(
    r"(?P<account>[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+)\."
    r"(?P<domain>[a-z0-9.-]+)/(?P<repository>[a-z0-9][a-z0-9._/-]*)"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@[a-z0-9]+(?:[+._-][a-z0-9]+)*:[A-Za-z0-9=_-]{32,})?"
)


@dataclass(frozen=True)
class AwsAlgorithmImage:
    """An image in AWS's algorithm registry of ``region``: SageMaker's built-in
    ``algorithm``."""

    algorithm: str
    region: str
    account: str


def ecr_domain(region: str) -> str:
    """The ECR domain of a region's partition (``cn-north-1`` -> ``amazonaws.com.cn``)."""
    for prefix, domain in _PARTITION_DOMAINS:
        if region.startswith(prefix):
            return domain
    return "amazonaws.com"


def aws_algorithm_image(image: str) -> AwsAlgorithmImage | None:
    """Which SageMaker built-in algorithm ``image`` is AWS's image of, if it is one."""
    m = _ECR_IMAGE.fullmatch(image)
    if m is None or m["repository"] not in ALGORITHM_REPOSITORIES:
        return None
    region, account = m["region"], m["account"]
    if account not in REGISTRY_ACCOUNTS.get(region, ()) or m["domain"] != ecr_domain(region):
        return None
    return AwsAlgorithmImage(m["repository"], region, account)
