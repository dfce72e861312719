"""The course's glossary: one Chinese term for each idea, the English term, its symbol.

The Chinese edition uses exactly these terms (``tests/test_glossary.py`` refuses the variants
listed here), with the English in parentheses in the chapter that introduces it. The site
prints this list as its glossary page (术语表), each term linked to the chapter that introduces
it: the first chapter, in the course's order, whose Chinese prose uses it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    zh: str
    en: str
    symbol: str = ""
    variants: tuple = ()        # other renderings a translator might reach for; not used


TERMS = (
    Term("长期依赖", "long-term dependencies", "", ("长程依赖", "长期依存")),
    Term("循环神经网络", "recurrent neural network (RNN)", "", ("递归神经网络",)),
    Term("细胞状态", "cell state", "$C_t$", ("单元状态", "记忆单元状态", "细胞态")),
    Term("隐藏状态", "hidden state", "$h_t$", ("隐状态", "隐层状态", "隐含状态")),
    Term("传送带", "conveyor belt", "", ("传输带",)),
    Term("遗忘门", "forget gate", "$f_t$", ("忘记门",)),
    Term("输入门", "input gate", "$i_t$"),
    Term("候选值", "candidate", "$\\tilde{C}_t$", ("候选向量", "候选状态", "候选记忆")),
    Term("输出门", "output gate", "$o_t$"),
    Term("逐元素", "element-wise (product)", "$\\odot$", ("按元素", "元素级", "哈达玛积")),
    Term("激活函数", "activation function", "$\\sigma$, $\\tanh$", ("激励函数",)),
    Term("权重矩阵", "weight matrix", "$W$"),
    Term("偏置", "bias", "$b$", ("偏置项",)),
    Term("随时间反向传播", "backpropagation through time (BPTT)", "", ("沿时间反向传播", "时间反向传播")),
    Term("梯度消失", "vanishing gradients", "", ("消失梯度",)),
    Term("梯度爆炸", "exploding gradients", "", ("爆炸梯度",)),
    Term("窥视孔连接", "peephole connections", "$p \\odot C_{t-1}$", ("窥孔连接", "猫眼连接")),
    Term("耦合的遗忘门和输入门", "coupled forget and input gates (CIFG)", "$i_t = 1 - f_t$"),
    Term("门控循环单元", "gated recurrent unit (GRU)", "", ("门控递归单元",)),
    Term("更新门", "update gate", "$z_t$"),
    Term("重置门", "reset gate", "$r_t$"),
    Term("梯度裁剪", "gradient clipping", "", ("梯度截断",)),
    Term("学习率", "learning rate", "$\\eta$"),
    Term("超参数", "hyper-parameter", "", ("超参",)),
    Term("注意力", "attention", "$\\alpha_{t,s}$", ("注意机制",)),
)


def variants_in(text):
    """The variants ``text`` uses, as (variant, the glossary's term): the glossary's own terms
    are taken out first, since a variant may sit inside one (时间反向传播 in 随时间反向传播)."""
    for term in sorted(TERMS, key=lambda t: -len(t.zh)):
        text = text.replace(term.zh, "\0")
    return [(v, t.zh) for t in TERMS for v in t.variants if v in text]


def introduced_in(chapters):
    """{term: chapter stem}: the first chapter whose prose uses each term.

    ``chapters`` is a list of (stem, prose) in the course's order."""
    found = {}
    for term in TERMS:
        found[term.zh] = next((stem for stem, prose in chapters if term.zh in prose), None)
    return found


def glossed(term, prose):
    """Whether ``prose`` gives the term with its English in parentheses somewhere:
    遗忘门 (forget gate), **细胞状态** (cell state), 门控循环单元（GRU）."""
    english = [term.en.split(" (")[0].split()[0]]
    if "(" in term.en:
        english.append(term.en.split("(")[1].rstrip(")"))
    keys = "|".join(re.escape(word) for word in english)
    pattern = rf"{re.escape(term.zh)}\**\s*[（(][^)）]{{0,40}}?\b({keys})"
    return re.search(pattern, prose, re.IGNORECASE) is not None
