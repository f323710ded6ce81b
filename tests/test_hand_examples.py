"""Hand-worked networks: every h, T, T^b and Pi below is computed by hand in the comments.

Each test runs on both engines (the `engine_cls` fixture)."""
from fractions import Fraction as F

import numpy as np
import pytest

from refbnn.engines.interpreter import Interpreter
from refbnn.semantics.accuracy import accuracy
from refbnn.semantics.importance import importance_variance, neuron_importance
from refbnn.semantics.margin import input_tolerance, margin, neuron_tolerance, t_bar
from refbnn.semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold, Weight


def fc_net() -> Model:
    """3 -> 2 -> 2 -> 2 classes, Z = 2.
    W1 = [[+,+,-],[-,+,+]], s1 = (0, 1), polarity (+1, -1)
    W2 = [[+,+],[+,-]],     s2 = (1, -1)
    W3 = [[+,-],[-,+]]"""
    return Model.build((3,), 2, [
        Linear(Weight.from_array([[1, 1, -1], [-1, 1, 1]])), Threshold((0, 1), (1, -1)),
        Linear(Weight.from_array([[1, 1], [1, -1]])), Threshold((1, -1)),
        Linear(Weight.from_array([[1, -1], [-1, 1]]))])


# x_a = [2, 1, 0], label 0:
#   h1 = [2+1-0, -2+1+0] = [3, -1];  a1 = [3 > 0, -1 <= 1 (polarity -1)] = [+1, +1]
#   h2 = [1+1, 1-1] = [2, 0];        a2 = [2 > 1, 0 > -1] = [+1, +1]
#   scores = [1-1, -1+1] = [0, 0]  -> tie -> class 0 (smallest index)
# x_b = [0, 2, 2], label 1:
#   h1 = [0+2-2, 0+2+2] = [0, 4];    a1 = [0 > 0 no, 4 <= 1 no] = [-1, -1]
#   h2 = [-1-1, -1+1] = [-2, 0];     a2 = [-2 > 1 no, 0 > -1] = [-1, +1]
#   scores = [-1-1, 1+1] = [-2, 2] -> class 1
FC_X = np.array([[2, 1, 0], [0, 2, 2]])
FC_Y = np.array([0, 1])


def test_fc_net_preactivations_and_scores_by_hand():
    runs = [Interpreter(fc_net()).run(x) for x in FC_X]
    assert runs[0].h == [[3, -1], [2, 0]] and runs[0].scores == [0, 0]
    assert runs[1].h == [[0, 4], [-2, 0]] and runs[1].scores == [-2, 2]


def test_fc_net_predictions_with_tie_to_smallest_index(engine_cls):
    assert list(engine_cls(fc_net()).predictions(FC_X)) == [0, 1]


def test_margin_eq1_and_eq2_by_hand():
    # eq. 2, first layer, Z = 2: |3 - 0 - 1/2| / 2 = 5/4;  |0 - 0 - 1/2| / 2 = 1/4
    assert margin(3, 0, 2) == F(5, 4) and margin(0, 0, 2) == F(1, 4)
    # eq. 1: |-2 - 1 - 1/2| = 7/2;  |0 - (-1) - 1/2| = 1/2
    assert margin(-2, 1) == F(7, 2) and margin(0, -1) == F(1, 2)


def test_neuron_and_input_tolerance_by_hand():
    model = fc_net()
    run_b = Interpreter(model).run(FC_X[1])
    # x_b: T = [1/4, 5/4 | 7/2, 1/2]; at b = 1: [0, 1, 1, 0] -> T^1_b = 2/4
    assert input_tolerance(model, run_b, F(1)) == F(1, 2)
    # eq. 3 with U*V = 3 positions and margins 1/2, 3/2, 5/2 (s = 0, h = 1, 2, 3) at b = 1: 2/3
    assert neuron_tolerance([1, 2, 3], 0, 1, F(1)) == F(2, 3)


def test_fc_net_T_tuple_by_hand(engine_cls):
    # T values: x_a [5/4, 5/4 | 1/2, 1/2], x_b [1/4, 5/4 | 7/2, 1/2]
    # b = 1/2: x_a 4/4, x_b 3/4 -> T = 7/8;  b = 1: 2/4, 2/4 -> 1/2;  b = 2: 0, 1/4 -> 1/8
    tol = engine_cls(fc_net()).tolerance(FC_X, [F(1, 2), F(1), F(2)])
    assert tol.overall == {F(1, 2): F(7, 8), F(1): F(1, 2), F(2): F(1, 8)}
    # per layer at b = 1: layer 1: x_a 2/2, x_b 1/2 -> 3/4; layer 2: 0, 1/2 -> 1/4
    assert [t[F(1)] for t in tol.layers] == [F(3, 4), F(1, 4)]
    assert t_bar(tol.overall) == (F(7, 8) + F(1, 2) + F(1, 8)) / 3


def test_fc_net_importance_by_hand(engine_cls):
    # A = 1 (both correct). Flipping:
    #  n0: x_a a1=[-,+] h2=[0,-2] a2=[-,-] scores [0,0] -> 0 ok; x_b a1=[+,-] h2=[0,2] a2=[-,+] -> 1 ok
    #      A* = 1, Pi = 0
    #  n1: x_a a1=[+,-] h2=[0,2] a2=[-,+] -> 1 wrong; x_b a1=[-,+] h2=[0,-2] a2=[-,-] -> 0 wrong: Pi = 1
    #  n2: x_a a2=[-,+] -> [-2,2] -> 1 wrong; x_b a2=[+,+] -> [0,0] -> 0 wrong: Pi = 1
    #  n3: x_a a2=[+,-] -> [2,-2] -> 0 ok;   x_b a2=[-,-] -> [0,0] -> 0 wrong: A* = 1/2, Pi = 1/2
    engine = engine_cls(fc_net())
    assert accuracy(engine.predictions(FC_X), FC_Y) == 1
    pi = engine.importance(FC_X, FC_Y)
    assert pi == [0, 1, 1, F(1, 2)]
    assert neuron_importance(engine, FC_X, FC_Y) == pi
    # mean 5/8; VAR = ((5/8)^2 + (3/8)^2 + (3/8)^2 + (1/8)^2) / 4 = 44/256 = 11/64
    assert importance_variance(pi) == F(11, 64)


def conv_net() -> Model:
    """[1,3,3], Z = 1: conv all-+1 3x3 pad 1 -> threshold s=1 -> conv all-+1 3x3 pad 1 ->
    threshold s=0 polarity -1 -> flatten -> linear [[+]*9, [-]*9]."""
    ones = np.ones((1, 1, 3, 3))
    return Model.build((1, 3, 3), 1, [
        Conv2d(Weight.from_array(ones), 1), Threshold((1,)),
        Conv2d(Weight.from_array(ones), 1), Threshold((0,), (-1,)),
        Flatten(), Linear(Weight.from_array([[1] * 9, [-1] * 9]))])


# x = [[1,0,0],[0,0,0],[0,0,1]]. Layer A sums each 3x3 neighbourhood (padded taps absent):
#   h_A = [[1,1,0],[1,2,1],[0,1,1]]; s = 1 -> only the centre fires: a = - everywhere but (1,1).
#   T_A = |h - 1 - 1/2| / 1 = 1/2 for h in {1, 2}, 3/2 for h = 0 (the two zeros).
# Layer B sums +-1 over the real taps only (#bits = 4 at corners, 6 at edges, 9 in the centre):
#   corner: -1-1-1+1 = -2; edge: 5*(-1)+1 = -4; centre: 8*(-1)+1 = -7.
#   (Were padded taps counted as -1 or +1, a corner would read -7 or +3.)
#   polarity -1, s = 0: +1 iff h <= 0 -> all +1; scores = [9, -9] -> class 0.
#   T_B = |h - 1/2| = 5/2 (corners), 9/2 (edges), 15/2 (centre).
CONV_X = np.array([[[[1, 0, 0], [0, 0, 0], [0, 0, 1]]]])


def test_conv_net_padding_counts_only_real_taps():
    run = Interpreter(conv_net()).run(CONV_X[0])
    assert run.h[0] == [1, 1, 0, 1, 2, 1, 0, 1, 1]
    assert run.h[1] == [-2, -4, -2, -4, -7, -4, -2, -4, -2]
    assert run.scores == [9, -9]


def test_conv_net_T_by_hand(engine_cls):
    # b = 1: layer A 2/9 (the two 3/2), layer B 9/9 -> T^1 = (2/9 + 1) / 2 = 11/18
    # b = 3: layer A 0, layer B 5/9 (four 9/2 and one 15/2) -> T^3 = 5/18
    tol = engine_cls(conv_net()).tolerance(CONV_X, [F(1), F(3)])
    assert tol.overall == {F(1): F(11, 18), F(3): F(5, 18)}
    assert tol.layers == [{F(1): F(2, 9), F(3): 0}, {F(1): 1, F(3): F(5, 9)}]


def test_conv_net_importance_by_hand(engine_cls):
    # Flip neuron 0: a_A = + everywhere but the centre; layer B sums become positive
    # (corner 1+1+1-1 = 2) -> polarity -1 gives all -1 -> scores [-9, 9] -> wrong. Pi = 1.
    # Flip neuron 1: all -1 -> scores [-9, 9] -> wrong. Pi = 1. VAR = 0.
    pi = engine_cls(conv_net()).importance(CONV_X, [0])
    assert pi == [1, 1] and importance_variance(pi) == 0


def pool_net(order: str) -> Model:
    """[1,3,3], Z = 2, conv 1x1 with weight +1 (h = x), then either
    maxpool -> threshold s=1 (pool the integers), or threshold s=1 -> maxpool (OR of bits),
    then flatten -> linear [[+], [-]]."""
    block = [MaxPool2d(), Threshold((1,))] if order == "pool-threshold" else [Threshold((1,)), MaxPool2d()]
    return Model.build((1, 3, 3), 2, [Conv2d(Weight.from_array(np.ones((1, 1, 1, 1))), 0), *block,
                                      Flatten(), Linear(Weight.from_array([[1], [-1]]))])


# x = [[0,1,2],[1,0,2],[2,2,2]]: floor pooling keeps only the top-left 2x2 window [0,1,1,0].
#   pool -> threshold: max = 1 (not 2: the last row and column are dropped); 1 > 1 is false
#   -> -1 -> scores [-1, 1] -> class 1.  T = |1 - 1 - 1/2| / 2 = 1/4 (one position).
#   threshold -> pool: bits [x > 1] = [[0,0,1],[0,0,1],[1,1,1]]; OR over the top-left window = 0
#   -> -1 -> class 1.  The threshold sees 9 positions: T = |x - 1 - 1/2| / 2 = 1/4 for x in {1, 2},
#   3/4 for x = 0: at b = 1/2 that is 2 zeros of 9 -> 2/9.
POOL_X = np.array([[[[0, 1, 2], [1, 0, 2], [2, 2, 2]]]])


@pytest.mark.parametrize("order", ["pool-threshold", "threshold-pool"])
def test_odd_sizes_pool_with_floor(engine_cls, order):
    engine = engine_cls(pool_net(order))
    assert list(engine.predictions(POOL_X)) == [1]
    tol = engine.tolerance(POOL_X, [F(1, 4), F(1, 2)])
    if order == "pool-threshold":
        assert tol.overall == {F(1, 4): 1, F(1, 2): 0}
    else:
        assert tol.overall == {F(1, 4): 1, F(1, 2): F(2, 9)}


def test_maxpool_on_bits_is_or_of_the_window(engine_cls):
    # x = [[0,0,2],[0,2,0],...]: bits [x > 1] in the top-left window = [0,0,0,1] -> OR = 1 -> +1
    # -> scores [1, -1] -> class 0.  Without the 2 at (1,1) the window is all 0 -> class 1.
    x = np.array([[[[0, 0, 2], [0, 2, 0], [0, 0, 0]]], [[[0, 0, 2], [0, 0, 0], [0, 0, 0]]]])
    assert list(engine_cls(pool_net("threshold-pool")).predictions(x)) == [0, 1]
