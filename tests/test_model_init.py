import torch

from kgglm.model.init import no_weight_init


def test_no_weight_init_skips_and_restores_initialisation():
    torch.manual_seed(0)
    with no_weight_init():
        t = torch.full((3, 4), 7.0)
        assert torch.nn.init.normal_(t) is t and (t == 7.0).all()
        torch.nn.init.kaiming_uniform_(t)
        assert (t == 7.0).all()
    torch.nn.init.normal_(t)
    assert not (t == 7.0).any()
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3).weight
    torch.manual_seed(0)
    with no_weight_init():
        torch.nn.Linear(4, 3)  # draws no random numbers: the next layer built is as without the block
    assert torch.equal(torch.nn.Linear(4, 3).weight, a)
